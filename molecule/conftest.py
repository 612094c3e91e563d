"""Helpers shared by the testinfra suites of every Molecule scenario.

Tests reach containers through testinfra's native podman backend (0.17 s a command)
rather than through Ansible (2.2 s a command); scenario membership comes from the
inventory Molecule wrote for the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The shared helpers live in tests/lib; Molecule starts pytest from the scenario directory,
# so the path is set here rather than relying on which ini file pytest picks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lib"))

from sdapi_testlib import molecule_env, site  # noqa: E402


def pytest_configure(config):
    """Test the scenario's sdapi_nodes unless a module names its own hosts."""
    if os.environ.get("MOLECULE_INVENTORY_FILE") and not config.option.hosts:
        config.option.hosts = ",".join(molecule_env.group_hosts("sdapi_nodes"))


@pytest.fixture(scope="session")
def scenario():
    return molecule_env


# The single node of the whole-site scenarios (default, real_webui): GPU host and proxy at
# once. A module that needs another host defines its own fixture of the same name.
@pytest.fixture(scope="module")
def node():
    return site.node()


@pytest.fixture(scope="module")
def https_url():
    """Where the controller reaches the node's HTTPS port (a port published on loopback)."""
    return site.https_url()


@pytest.fixture(scope="module")
def node_ca(node, tmp_path_factory):  # pylint: disable=redefined-outer-name
    """The node's self-signed certificate, the one thing a client must trust."""
    return site.node_certificate(node, tmp_path_factory.mktemp("ca") / "node.crt")


def pytest_runtest_makereport(item, call):
    """Attach the node's journal tail to a failing test: the first thing anyone reads."""
    if call.when != "call" or call.excinfo is None:
        return
    host = item.funcargs.get("host") if hasattr(item, "funcargs") else None
    if host is None:
        return
    try:
        tail = host.run("journalctl --no-pager -n 40 -p warning").stdout
    except Exception as exc:  # noqa: BLE001 - a report helper must never mask the failure
        tail = f"(journal not readable: {exc})"
    item.add_report_section("call", "journal (warnings, last 40)", tail)
