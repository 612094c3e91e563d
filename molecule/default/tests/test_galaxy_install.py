"""The collection as Galaxy users get it: `ansible-galaxy collection build` leaves the dev
and test files out, the tarball installs into a fresh collections path, and a playbook
written outside the repository drives this converged node through it by FQCN
(import_playbook: sdapi.node.site, then every role on its own), green with 0 changed."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from sdapi_testlib import molecule_env

ROLES = ["base", "kernel_tuning", "torch_env", "webui", "nginx_proxy"]
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))

OPERATOR_PLAYBOOK = """\
---
- name: The site, by its FQCN
  ansible.builtin.import_playbook: sdapi.node.site

- name: Every host of the node, role by role
  hosts: sdapi_nodes
  become: true
  roles:
    - role: sdapi.node.base

- name: The GPU hosts
  hosts: sdapi_webui
  become: true
  roles:
    - role: sdapi.node.kernel_tuning
    - role: sdapi.node.torch_env
    - role: sdapi.node.webui

- name: The proxy
  hosts: sdapi_proxy
  become: true
  roles:
    - role: sdapi.node.nginx_proxy
"""


def _galaxy_version() -> str:
    return str(yaml.safe_load((PROJECT / "galaxy.yml").read_text())["version"])


def _operator_env(collections: Path) -> dict:
    """An operator's environment: only the fresh collections path, none of Molecule's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return env


def _run(cmd, env, cwd, timeout=900):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    rc, output = _run(["ansible-galaxy", "collection", "build", str(PROJECT), "--output-path", str(out)],
                      dict(os.environ), out)
    assert rc == 0, output
    (tarball,) = out.glob("sdapi-node-*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """The tarball installed into a collections path that holds nothing else; the
    dependencies resolve from the ansible package, as on a controller without Galaxy."""
    work = tmp_path_factory.mktemp("operator")
    collections = work / "collections"
    env = _operator_env(collections)
    rc, output = _run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps",
                       "-p", str(collections), str(built)], env, work)
    assert rc == 0, output
    return work, collections, env


def test_tarball_holds_the_collection_and_no_dev_files(built):
    with tarfile.open(built) as tar:
        names = tar.getnames()
    for role in ROLES:
        assert f"roles/{role}/meta/argument_specs.yml" in names
        assert f"roles/{role}/README.md" in names
    for shipped in ("MANIFEST.json", "FILES.json", "playbooks/site.yml", "playbooks/smoke.yml",
                    "plugins/filter/network.py", "meta/runtime.yml", "README.md", "LICENSE"):
        assert shipped in names
    dev = [n for n in names
           if n.split("/")[0] in {"tests", "molecule", "scripts", "benchmarks", ".venv", ".cache", ".git",
                                  ".ci", ".config", "Makefile", "requirements.txt", "pytest.ini"}]
    assert dev == []
    assert not [n for n in names if "webui_double" in n or n.endswith(".pyc")]


def test_installed_collection_is_listed_with_its_version(installed):
    work, collections, env = installed
    rc, output = _run(["ansible-galaxy", "collection", "list", "sdapi.node", "-p", str(collections)], env, work)
    assert rc == 0, output
    assert "sdapi.node" in output and _galaxy_version() in output
    assert str(collections) in output
    assert not (collections / "ansible_collections" / "sdapi" / "node").is_symlink()


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_the_installed_role(installed, role):
    work, _collections, env = installed
    rc, output = _run(["ansible-doc", "-t", "role", f"sdapi.node.{role}"], env, work, timeout=120)
    assert rc == 0, output
    # Without colour ansible-doc marks names with asterisks.
    assert re.search(r"ENTRY POINT: \*?main\*?", output), output[:2000]
    specs = yaml.safe_load((PROJECT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    for option in specs["argument_specs"]["main"]["options"]:
        assert option in output


def test_operator_playbook_outside_the_repo_drives_the_node_by_fqcn(installed):
    work, _collections, env = installed
    playbook = work / "operator.yml"
    playbook.write_text(OPERATOR_PLAYBOOK)
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    rc, output = _run(["ansible-playbook", "-i", str(inventory), str(playbook)], env, work)
    assert rc == 0, output[-5000:]
    recap = {m["host"]: m for m in molecule_env.RECAP.finditer(output)}
    node = molecule_env.group_hosts("sdapi_nodes")[0]
    assert int(recap[node]["failed"]) == 0 and int(recap[node]["unreachable"]) == 0, output[-5000:]
    assert int(recap[node]["changed"]) == 0, output[-5000:]
