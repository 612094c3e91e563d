"""The shipped playbooks and the example inventory parse the way an operator runs them."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example"
VAULT_CLIENT = str(EXAMPLE / "vault-password.sh")
# The example vaults are encrypted with a published password (inventories/example/README.md).
ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
           SDAPI_VAULT_PASSWORD="sdapi-example-vault-password")
LAYOUTS = {
    "single-host": {"sdapi_webui": ["gpu1.example.internal"], "sdapi_proxy": ["gpu1.example.internal"]},
    "split": {"sdapi_webui": ["gpu1.example.internal", "gpu2.example.internal"],
              "sdapi_proxy": ["edge1.example.internal"]},
}


def _run(*cmd):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_example_inventory_has_the_site_groups(layout):
    out = _run("ansible-inventory", "-i", f"inventories/example/{layout}", "--graph",
               "--vault-password-file", VAULT_CLIENT)
    assert out.returncode == 0, out.stderr
    assert "@sdapi_nodes" in out.stdout
    graph = json.loads(_run("ansible-inventory", "-i", f"inventories/example/{layout}", "--list",
                            "--vault-password-file", VAULT_CLIENT).stdout)
    for group, hosts in LAYOUTS[layout].items():
        assert sorted(graph[group]["hosts"]) == hosts


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_example_secrets_are_vault_encrypted_and_decrypt(layout):
    vault = EXAMPLE / layout / "group_vars" / "sdapi_nodes" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    out = _run("ansible", "-i", f"inventories/example/{layout}", "sdapi_proxy", "-m", "ansible.builtin.debug",
               "-a", "msg={{ nginx_proxy_clients[0].key | length }}", "--vault-password-file", VAULT_CLIENT,
               "-c", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"msg": 43' in out.stdout


def test_vault_client_refuses_a_password_file_others_can_read(tmp_path):
    (tmp_path / "sdapi").mkdir()
    secret = tmp_path / "sdapi" / "vault-password"
    secret.write_text("from-the-file\n")
    env = {k: v for k, v in ENV.items() if k != "SDAPI_VAULT_PASSWORD"}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    secret.chmod(0o644)
    loose = subprocess.run([VAULT_CLIENT], env=env, capture_output=True, text=True, check=False)
    assert loose.returncode != 0 and "0600" in loose.stderr
    secret.chmod(0o600)
    tight = subprocess.run([VAULT_CLIENT], env=env, capture_output=True, text=True, check=False)
    assert tight.returncode == 0 and tight.stdout == "from-the-file\n"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("playbook", ["playbooks/site.yml", "playbooks/smoke.yml"])
def test_playbook_passes_syntax_check_with_the_example_inventory(playbook, layout):
    out = _run("ansible-playbook", "-i", f"inventories/example/{layout}", playbook, "--syntax-check",
               "--vault-password-file", VAULT_CLIENT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_smoke_refuses_to_run_without_a_key():
    out = _run("ansible-playbook", "playbooks/smoke.yml")
    assert out.returncode != 0
    assert "smoke_api_key" in out.stdout
