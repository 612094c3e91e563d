"""Bad input to any role stops the whole site in its first play, before any host changes.

The site playbook (the scenario's converge, which imports sdapi.node.site) runs once per
case, side by side. A case passes when the run failed in the play that runs every role's
`validate` entry point, in the role the variable belongs to: no later play started, no
task outside a validate.yml ran, nothing changed, the failure message names the variable,
and no secret of the case or of the inventory appears anywhere in the output.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]

ROOT = Path(__file__).resolve().parents[3]
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nTls-Key-Secret-7f3a9c\n-----END PRIVATE KEY-----"

# (name, role whose validate.yml must refuse it, variable the message must name,
#  extra vars, secrets in those vars that must never be echoed)
CASES = [
    ("ssh port not an int", "base", "base_firewall_ssh_port",
     {"base_firewall_ssh_port": "twenty-two"}, []),
    ("bad CIDR in SSH sources", "base", "base_firewall_ssh_sources",
     {"base_firewall_ssh_sources": ["10.0.0.0/33"]}, []),
    ("unknown firewall protocol", "base", "base_firewall_extra_rules",
     {"base_firewall_extra_rules": [{"port": 53, "protocol": "icmp"}]}, []),
    ("backend port is the HTTPS port", "base", "base_firewall_backend_ports",
     {"base_firewall_backend_ports": [443]}, []),
    ("CA certificate not PEM", "base", "base_extra_ca_certificates",
     {"base_extra_ca_certificates": [{"name": "corp", "content": "not a certificate"}]}, []),
    ("vm.overcommit_memory=2", "kernel_tuning", "kernel_tuning_sysctl_overrides",
     {"kernel_tuning_sysctl_overrides": {"vm.overcommit_memory": 2}}, []),
    ("unknown THP mode", "kernel_tuning", "kernel_tuning_thp_mode",
     {"kernel_tuning_thp_mode": "sometimes"}, []),
    ("read-ahead out of range", "kernel_tuning", "kernel_tuning_read_ahead_kb",
     {"kernel_tuning_read_ahead_kb": 131072}, []),
    ("soft open-file limit above hard", "kernel_tuning", "kernel_tuning_nofile_soft",
     {"kernel_tuning_nofile_soft": 600000}, []),
    ("unknown accelerator profile", "torch_env", "torch_env_profile",
     {"torch_env_profile": "tpu"}, []),
    ("xformers on the CPU profile", "torch_env", "torch_env_xformers",
     {"torch_env_xformers": True}, []),
    ("xformers not built for torch", "torch_env", "torch_env_xformers_version",
     {"torch_env_profile": "cuda", "torch_env_torch_version": "2.7.0",
      "torch_env_torchvision_version": "0.22.0", "torch_env_xformers_version": "0.0.34"}, []),
    ("torch override without torchvision", "torch_env", "torch_env_torchvision_version",
     {"torch_env_install_torchvision": True, "torch_env_torch_version": "2.7.0"}, []),
    ("verify not a bool", "torch_env", "torch_env_verify",
     {"torch_env_verify": "maybe"}, []),
    ("build label not a bool", "torch_env", "torch_env_build_label",
     {"torch_env_build_label": "sometimes"}, []),
    ("forbidden webui flag", "webui", "webui_extra_flags",
     {"webui_extra_flags": ["--enable-insecure-extension-access"]}, []),
    ("port clash between webui instances", "webui", "webui_instances",
     {"webui_instances": [{"gpu": "0", "port": 7870}, {"gpu": "1", "port": 7870}]}, []),
    ("model without checksum", "webui", "webui_models",
     {"webui_models": [{"name": "x.safetensors", "url": "file:///srv/models/x.safetensors"}]}, []),
    ("unknown attention backend", "webui", "webui_attention",
     {"webui_attention": "flash"}, []),
    ("xformers attention in CPU mode", "webui", "webui_attention",
     {"webui_attention": "xformers"}, []),
    ("colon in the API password", "webui", "webui_api_auth",
     {"webui_api_auth": [{"user": "api", "password": "pw:Webui-Secret-41d2"}]}, ["Webui-Secret-41d2"]),
    ("requirement override not a version", "webui", "webui_requirement_overrides",
     {"webui_requirement_overrides": {"setuptools": "latest"}}, []),
    ("hub files at a branch, not a commit", "webui", "webui_hf_snapshots",
     {"webui_hf_snapshots": [{"repo": "openai/clip-vit-large-patch14", "revision": "main",
                              "files": ["vocab.json"]}]}, []),
    ("no API keys while auth is required", "nginx_proxy", "nginx_proxy_clients",
     {"nginx_proxy_clients": [], "nginx_proxy_auth_required": True}, []),
    ("short API key", "nginx_proxy", "nginx_proxy_clients",
     {"nginx_proxy_clients": [{"name": "eve", "key": "Short-Secret-kx"}]}, ["Short-Secret-kx"]),
    ("short basic password", "nginx_proxy", "nginx_proxy_clients",
     {"nginx_proxy_clients": [{"name": "bob", "basic_password": "Pw-Sec-9"}]}, ["Pw-Sec-9"]),
    ("unknown TLS mode", "nginx_proxy", "nginx_proxy_tls_mode",
     {"nginx_proxy_tls_mode": "letsencrypt"}, []),
    ("provided TLS mode without certificate", "nginx_proxy", "nginx_proxy_tls_certificate",
     {"nginx_proxy_tls_mode": "provided", "nginx_proxy_tls_private_key": KEY_PEM}, ["Tls-Key-Secret-7f3a9c"]),
    ("HTTPS port not an int", "nginx_proxy", "nginx_proxy_https_port",
     {"nginx_proxy_https_port": "four-four-three"}, []),
    ("HTTP and HTTPS on one port", "nginx_proxy", "nginx_proxy_http_port",
     {"nginx_proxy_http_port": 443}, []),
    ("bad generation rate", "nginx_proxy", "nginx_proxy_generation_rate",
     {"nginx_proxy_generation_rate": "fast"}, []),
]

PLAY = re.compile(r"^PLAY \[(.*)\] \*+\s*$", re.M)
ROLE_TASK = re.compile(r"^TASK \[sdapi\.node\.(\w+) : (.*)\] \*+\s*$", re.M)
FAILURE = re.compile(r"^(?:fatal: \[[^\]]+\]: FAILED!|failed: \[[^\]]+\] \(item=.*?\)) => ", re.M)
ERROR_TEXT = re.compile(r"^\[ERROR\]: (.*?)^Origin:", re.M | re.S)
ARG_SPEC_TASK = "Validating arguments against arg spec 'validate' - "


def _validate_task_names() -> dict[str, set[str]]:
    """Task names of each role's tasks/validate.yml, blocks included."""
    def names(tasks):
        for task in tasks or []:
            if "name" in task and "block" not in task:
                yield task["name"]
            for key in ("block", "rescue", "always"):
                yield from names(task.get(key))

    return {p.parent.parent.name: set(names(yaml.safe_load(p.read_text())))
            for p in (ROOT / "roles").glob("*/tasks/validate.yml")}


def _failure_messages(output: str) -> list[str]:
    """What the failed tasks said: the [ERROR] text and the msg of each failed result."""
    messages = [m.group(1) for m in ERROR_TEXT.finditer(output)]
    decoder = json.JSONDecoder()
    for match in FAILURE.finditer(output):
        try:
            result = decoder.raw_decode(output, match.end())[0]
        except ValueError:
            continue
        messages += [str(result.get("msg", "")), *map(str, result.get("argument_errors", []))]
    return messages


def _inventory_secrets() -> list[str]:
    group_vars = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory" / "group_vars" / "sdapi_nodes"
    data = yaml.safe_load(group_vars.read_text()) or {}
    return [c["key"] for c in data.get("nginx_proxy_clients", []) if c.get("key")]


@pytest.fixture(scope="module")
def runs(pytestconfig):
    """Every case through the whole site, four at a time; prints how long the table took."""
    playbook = molecule_env.converge_playbook()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c[0]: pool.submit(molecule_env.ansible_playbook, playbook, extra_vars=c[3]) for c in CASES}
        results = {name: future.result() for name, future in futures.items()}
    line = f"site bad-input table: {len(CASES)} cases in {time.monotonic() - started:.1f} s (4 side by side)"
    # Shown even when pytest captures output (Molecule's verifier does).
    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}")
    return results


@pytest.fixture(scope="module")
def validation_play():
    return yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())[0]["name"]


def test_the_table_covers_every_role():
    assert {c[1] for c in CASES} == set(_validate_task_names()) and len(CASES) >= 22


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_site_refuses_bad_input_before_any_change(runs, validation_play, case):
    name, role, variable, case_secrets = case[0], case[1], case[2], case[4]
    rc, output, recap = runs[name]
    node = molecule_env.group_hosts("sdapi_nodes")[0]
    tail = output[-4000:]

    assert rc != 0, tail
    assert recap[node]["failed"] == 1 and recap[node]["changed"] == 0, tail

    # Only the validation play started, and in it no role ran a task of its main flow.
    assert PLAY.findall(output) == [validation_play], tail
    allowed = _validate_task_names()
    role_tasks = ROLE_TASK.findall(output)
    strays = [(r, t) for r, t in role_tasks if t not in allowed[r] and not t.startswith(ARG_SPEC_TASK)]
    assert strays == [], tail
    # The refusal came from the role the variable belongs to: its last task is the one that failed.
    assert role_tasks and role_tasks[-1][0] == role, tail

    messages = _failure_messages(output)
    assert any(variable in m for m in messages), "\n".join(messages) or tail

    leaked = [s for s in case_secrets + _inventory_secrets() if s in output]
    assert leaked == [], "secrets echoed in the output"
