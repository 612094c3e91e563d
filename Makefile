# sdapi.node: every entry point an operator or CI needs. All of them run the set-up
# first (host packages, controller virtualenv, test images), which skips what is done.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/tests/podman/containers.conf
VENV := $(CURDIR)/.venv/bin

.PHONY: help setup demo demo-destroy test lint unit molecule bench

help:
	@echo "make demo          converge playbooks/site.yml into a local container and say where it answers"
	@echo "make demo-destroy  remove the demo container"
	@echo "make test          lint, unit tests and every Molecule scenario; ends with 'N passed, N failed'"
	@echo "make lint | unit | molecule [SCENARIO=name]   one part of the suite"
	@echo "make bench         run benchmarks/ (converge, no-op, fleet, proxy, model load) and refresh benchmarks/RESULTS.md"

setup:
	@scripts/setup-host.sh

demo: setup
	@$(VENV)/python scripts/demo.py up

demo-destroy:
	@$(VENV)/python scripts/demo.py down

test: setup
	@$(VENV)/python scripts/run_suite.py

lint: setup
	@$(VENV)/python scripts/run_suite.py --only lint

unit: setup
	@$(VENV)/python scripts/run_suite.py --only unit

molecule: setup
	@$(VENV)/python scripts/run_suite.py --only molecule $(if $(SCENARIO),--scenario $(SCENARIO))

bench: setup
	@$(VENV)/python benchmarks/run.py
