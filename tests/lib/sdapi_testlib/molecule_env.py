"""What a Molecule run tells its verifier: inventory groups, playbooks, ansible runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import testinfra
import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def _inventory() -> dict:
    path = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    return yaml.safe_load(path.read_text()) or {}


def group_hosts(group: str) -> list[str]:
    """Names of the hosts Molecule put into an inventory group (groups are top-level keys)."""
    members = (_inventory().get(group) or {}).get("hosts") or {}
    return sorted(members)


def host(name: str):
    """A testinfra host for a scenario container, on the native podman backend."""
    return testinfra.get_host(f"podman://{name}")


def name_of(node) -> str:
    """The container name behind a testinfra host."""
    return node.backend.name


def address_of(node) -> str:
    """The container's IPv4 address on the scenario network."""
    out = node.check_output("ip -4 -o addr show scope global")
    return out.split()[3].split("/")[0]


def playbook(name: str) -> str:
    """A playbook of molecule/shared."""
    return str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / "shared" / name)


def converge_playbook() -> str:
    """The converge playbook of this scenario: its own, else the shared one."""
    scenario_dir = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    config = yaml.safe_load((scenario_dir / "molecule.yml").read_text()) or {}
    own = ((config.get("provisioner") or {}).get("playbooks") or {}).get("converge")
    return str((scenario_dir / own).resolve()) if own else playbook("converge.yml")


def ansible_playbook(playbook_path: str, *args: str, extra_vars: dict | None = None):
    """Run ansible-playbook against the scenario inventory; return (rc, output, recap)."""
    cmd = [
        "ansible-playbook",
        "-i",
        str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"),
        playbook_path,
        *args,
    ]
    if extra_vars is not None:
        cmd += ["-e", json.dumps(extra_vars)]
    # Molecule forces colour for its own output; parsing wants plain text.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, env=env)
    output = ANSI.sub("", proc.stdout + proc.stderr)
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }
    return proc.returncode, output, recap


def apply_role(role: str, target: str, extra_vars: dict, *args: str):
    """Apply one role to one container with extra variables (molecule/shared/apply-role.yml)."""
    return ansible_playbook(
        playbook("apply-role.yml"), *args,
        extra_vars={"target": target, "role_under_test": role, **extra_vars},
    )


def apply_role_cases(role: str, target: str, cases: dict, workers: int = 4) -> dict:
    """Apply the role once per named case, side by side; {name: (rc, output, recap)}."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(apply_role, role, target, extra) for name, extra in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_refused_before_change(result, target: str, *needles: str) -> None:
    """The play failed on the target, changed nothing there, and its output names the needles."""
    rc, output, recap = result
    tail = output[-3000:]
    assert rc != 0, tail
    assert recap[target]["failed"] == 1, tail
    assert recap[target]["changed"] == 0, tail
    for needle in needles:
        assert needle in output, tail
