"""Every role documents and validates what it exposes.

For each role: `ansible-doc -t role` renders it; every public default is declared in
meta/argument_specs.yml with the same default, and appears in the role README; every list
option says what its elements are.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def _specs(role: str) -> dict:
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def _defaults(role: str) -> dict:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def _lists_without_elements(options: dict, prefix: str = "") -> list[str]:
    missing = []
    for name, spec in options.items():
        if spec.get("type") == "list" and "elements" not in spec:
            missing.append(prefix + name)
        missing += _lists_without_elements(spec.get("options") or {}, f"{prefix}{name}.")
    return missing


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_the_role(role):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"))
    out = subprocess.run(["ansible-doc", "-t", "role", f"sdapi.node.{role}"],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    for option in _specs(role):
        assert option in out.stdout


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_specified_with_the_same_default(role):
    specs = _specs(role)
    for name, value in _defaults(role).items():
        assert name.startswith(f"{role}_"), f"{name} lacks the role prefix"
        assert name in specs, f"{name} is not in argument_specs"
        assert specs[name].get("default") == value, f"{name}: spec default differs"


@pytest.mark.parametrize("role", ROLES)
def test_every_list_option_names_its_elements(role):
    assert _lists_without_elements(_specs(role)) == []


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_option(role):
    readme = (ROOT / "roles" / role / "README.md").read_text()
    missing = [name for name in _specs(role) if f"`{name}`" not in readme and f"{name}:" not in readme]
    assert missing == []
