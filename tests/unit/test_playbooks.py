"""The shipped playbooks and the example inventory parse the way an operator runs them."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"))


def _run(*cmd):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)


def test_example_inventory_has_the_site_groups():
    out = _run("ansible-inventory", "-i", "inventories/example", "--graph")
    assert out.returncode == 0, out.stderr
    for group in ("@sdapi_nodes", "@sdapi_webui", "@sdapi_proxy", "gpu1.example.internal"):
        assert group in out.stdout


@pytest.mark.parametrize("playbook", ["playbooks/site.yml", "playbooks/smoke.yml"])
def test_playbook_passes_syntax_check_with_the_example_inventory(playbook):
    out = _run("ansible-playbook", "-i", "inventories/example", playbook, "--syntax-check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_smoke_refuses_to_run_without_a_key():
    out = _run("ansible-playbook", "playbooks/smoke.yml")
    assert out.returncode != 0
    assert "smoke_api_key" in out.stdout
