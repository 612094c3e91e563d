"""Runs the whole test suite (`make test`): lint, unit tests, every Molecule scenario.

Prints how long each part took and ends with one line `N passed, N failed` that sums
them: pytest cases from the unit tests and from each scenario's verifier, plus one case
per lint tool and one per scenario sequence (create, converge, idempotence, destroy).
Exits non-zero on any failure.

The scenarios run in two lanes at once (--jobs 2, the default): most of a scenario's time
is Ansible and SSH round trips and container start-up, which leave a core idle, so two
lanes finish the suite in far less than the sum of its parts on 2 cores (figures in the
summary). --jobs 1 runs them one after another, as before.

Usage: run_suite.py [--only lint|unit|molecule] [--scenario NAME ...] [--jobs 1|2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".cache" / "logs"
# Two lanes of about equal length (seconds measured alone on a 2-core host: real_webui 900,
# default 520, multi_node 300, webui 270, nginx_proxy 250, base and kernel_tuning 190,
# torch_env 160). Every scenario that installs the torch 2.13.0 wheelhouse is in the second
# lane: two of them at once would download into the same controller directory. A scenario
# not named here joins the second lane.
LANES = [["real_webui", "kernel_tuning", "base"],
         ["torch_env", "webui", "nginx_proxy", "multi_node", "default"]]


def scenarios() -> list[str]:
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    # The whole-site scenario last: role scenarios fail faster and say more.
    return sorted(found, key=lambda name: name == "default")


def junit_counts(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    passed = failed = 0
    for suite in ET.parse(path).getroot().iter("testsuite"):
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        passed += tests - bad - skipped
        failed += bad
    return passed, failed


class Suite:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, int, int]] = []
        self.started = time.monotonic()
        # Lanes share stdout: one line at a time, each prefixed with its part's name.
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    def run(self, name: str, cmd: list[str], junit: Path | None = None, env=None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{name.replace(' ', '_').replace('/', '_')}.log"
        self.say(f"\n== {name}: {' '.join(cmd)}  (log: {log.relative_to(ROOT)})\n")
        if junit is not None and junit.exists():
            junit.unlink()
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if _worth_showing(line):
                    self.say(f"   [{name}] {line}")
            rc = proc.wait()
        elapsed = time.monotonic() - started
        passed, failed = junit_counts(junit) if junit is not None else (0, 0)
        # The step itself is one case: a failed lint, converge or idempotence counts.
        if rc == 0:
            passed += 1
        else:
            failed += 1
            tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
            self.say(f"   FAILED ({name}, rc={rc}); last lines of {log}:\n{tail}\n")
        with self._lock:
            self.rows.append((name, elapsed, passed, failed))
        self.say(f"   {name}: {passed} passed, {failed} failed in {elapsed:.0f}s\n")

    def report(self) -> int:
        print("\n== summary (seconds per part; lanes overlap, so parts add up to more than the wall clock)")
        for name, elapsed, passed, failed in self.rows:
            print(f"   {name:<28} {elapsed:7.1f}s  {passed:4d} passed  {failed:3d} failed")
        total = sum(r[1] for r in self.rows)
        passed = sum(r[2] for r in self.rows)
        failed = sum(r[3] for r in self.rows)
        print(f"   {'sum of parts':<28} {total:7.1f}s")
        print(f"   {'wall clock':<28} {time.monotonic() - self.started:7.1f}s")
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0


def _worth_showing(line: str) -> bool:
    """Progress without the flood: molecule step results, recaps, pytest outcomes."""
    markers = ("Executed:", "PLAY RECAP", " : ok=", "passed", "failed", "FAILED", "ERROR",
               "error", "Passed:", "Failed:", "fatal:")
    noise = ("RETRYING", "'failed': False", "=> (item=")
    return any(m in line for m in markers) and not any(n in line for n in noise)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["lint", "unit", "molecule"])
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--jobs", type=int, choices=[1, 2],
                        default=int(os.environ.get("SDAPI_SUITE_JOBS", "2")))
    args = parser.parse_args()

    venv_bin = ROOT / ".venv" / "bin"
    env = dict(os.environ)
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "podman" / "containers.conf"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".cache" / "collections")
    env["NO_COLOR"] = "1"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"

    suite = Suite()
    if args.only in (None, "lint"):
        suite.run("yamllint", ["yamllint", "--strict", "."], env=env)
        suite.run("ansible-lint", ["ansible-lint", "--nocolor"], env=env)
        suite.run("ansible-test sanity", ["bash", "scripts/sanity.sh"], env=env)
    if args.only in (None, "unit"):
        junit = LOGS / "unit.xml"
        suite.run("unit tests", ["pytest", "-q", f"--junitxml={junit}", "tests/unit"],
                  junit=junit, env=env)
    if args.only in (None, "molecule"):
        names = args.scenario or scenarios()
        lanes = lanes_for(names) if args.jobs > 1 and not args.scenario else [names]
        threads = [threading.Thread(target=run_lane, args=(suite, lane, env)) for lane in lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return suite.report()


def lanes_for(names: list[str]) -> list[list[str]]:
    """LANES restricted to the scenarios there are; any other joins the second lane."""
    lanes = [[n for n in lane if n in names] for lane in LANES]
    lanes[-1] += [n for n in names if not any(n in lane for lane in LANES)]
    return [lane for lane in lanes if lane]


def run_lane(suite: Suite, names: list[str], env: dict) -> None:
    for name in names:
        if name == "real_webui":
            # Its container bind-mounts what this lays out (fixtures, checkpoints), so it
            # runs before Molecule creates the container; made once, then a check.
            suite.run("real-webui fixtures",
                      [sys.executable, "tests/lib/sdapi_testlib/real_webui.py"], env=env)
        junit = LOGS / f"molecule-{name}.xml"
        # -rP: what passing tests print (timings, counts) lands in the log as figures.
        scenario_env = dict(env, PYTEST_ADDOPTS=f"--junitxml={junit} -rP")
        suite.run(f"molecule {name}", ["molecule", "test", "-s", name],
                  junit=junit, env=scenario_env)


if __name__ == "__main__":
    sys.exit(main())
