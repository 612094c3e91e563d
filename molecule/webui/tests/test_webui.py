"""sdapi.node.webui with the webui test double, as an operator sees the service.

Order matters in this module: the disruptive tests (kill -9, no network, upgrades) come
last, and every one of them leaves the node as it found it.
"""

import json
import subprocess
import time

import pytest

from sdapi_testlib import molecule_env

AUTH = "molecule:not-a-real-secret-7f3a"
PORTS = {0: 7861, 1: 7862}
MODELS = "/var/lib/sdapi/models/Stable-diffusion"


def _api(host, port, route, auth=AUTH):
    """GET a route from inside the node; returns (status, body)."""
    out = host.run(f"curl -s -u {auth} -w '\\n%{{http_code}}' http://127.0.0.1:{port}/sdapi/v1/{route}")
    payload, _newline, status = out.stdout.rpartition("\n")
    return int(status or 0), payload


def _wait_ready(host, instance, timeout=90):
    """The instance answers and its current start logged the model load."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        invocation = host.check_output(f"systemctl show -p InvocationID --value sdapi-webui@{instance}")
        log = host.run(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}").stdout
        if invocation and "Model loaded in" in log and _api(host, PORTS[instance], "progress")[0] == 200:
            return log
        time.sleep(1)
    raise AssertionError(host.run(f"journalctl --no-pager -n 30 -u sdapi-webui@{instance}").stdout)


@pytest.mark.parametrize("instance", [0, 1])
def test_each_instance_runs_enabled_as_the_service_user(host, instance):
    service = host.service(f"sdapi-webui@{instance}")
    assert service.is_enabled and service.is_running
    pid = host.check_output(f"systemctl show -p MainPID --value sdapi-webui@{instance}")
    assert host.check_output(f"ps -o user= -p {pid}") == "sdapi"


@pytest.mark.parametrize("instance", [0, 1])
def test_each_instance_listens_on_loopback_only(host, instance):
    port = PORTS[instance]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_txt2img_returns_a_valid_png(host):
    image_check = host.run(
        "curl -s -u %s -H 'content-type: application/json' "
        "-d '{\"seed\": 3, \"width\": 96, \"height\": 64, \"steps\": 2}' "
        "http://127.0.0.1:7861/sdapi/v1/txt2img | python3 -c %s",
        AUTH,
        "import base64, json, struct, sys; img = base64.b64decode(json.load(sys.stdin)['images'][0]); "
        "assert img[:8] == b'\\x89PNG\\r\\n\\x1a\\n'; print(*struct.unpack('>II', img[16:24]))",
    )
    assert image_check.rc == 0, image_check.stderr
    assert image_check.stdout.split() == ["96", "64"]


def test_api_refuses_requests_without_credentials(host):
    assert _api(host, PORTS[0], "progress", auth="molecule:wrong")[0] == 401


@pytest.mark.parametrize("instance", [0, 1])
def test_journal_shows_the_model_load(host, instance):
    log = host.check_output(f"journalctl --no-pager -o cat -u sdapi-webui@{instance}")
    assert "Loading weights [" in log and "Model loaded in" in log


def test_ckpt_was_converted_and_the_pickle_is_gone(host):
    assert host.file(f"{MODELS}/legacy.safetensors").is_file
    assert not host.file(f"{MODELS}/legacy.ckpt").exists
    assert not host.file("/var/lib/sdapi/staging/legacy.ckpt").exists
    loads = host.run(
        "runuser -u sdapi -- /opt/sdapi/venv/bin/python -c %s",
        f"from safetensors.torch import load_file; print(sorted(load_file('{MODELS}/legacy.safetensors')))",
    )
    assert loads.rc == 0, loads.stderr
    assert loads.stdout.strip() == "['b', 'w']"
    status, payload = _api(host, PORTS[0], "sd-models")
    assert "legacy" in [m["model_name"] for m in json.loads(payload)]


def test_credentials_stay_off_the_command_line_and_out_of_world_reach(host):
    env = host.file("/etc/sdapi/webui.env")
    assert (env.user, env.group, env.mode) == ("root", "sdapi", 0o640)
    pid = host.check_output("systemctl show -p MainPID --value sdapi-webui@0")
    assert "not-a-real-secret" not in host.check_output(f"cat /proc/{pid}/cmdline | tr '\\0' ' '")


def test_journal_shows_the_start_arguments_with_the_credential_masked(host):
    log = host.check_output("journalctl --no-pager -o cat -u sdapi-webui@0")
    assert "--api-auth ********" in log
    assert "not-a-real-secret" not in log


def test_code_tree_is_read_only_for_the_service(host):
    current = host.file("/opt/sdapi/webui/current")
    assert current.is_symlink
    assert host.run("runuser -u sdapi -- touch /opt/sdapi/webui/current/probe").rc != 0


def test_unit_sandbox_exposure(host, capsys):
    out = host.check_output("systemd-analyze security sdapi-webui@0.service | tail -1")
    score = float(out.split("service:")[1].split()[0])
    with capsys.disabled():
        print(f"\n[webui] systemd-analyze security sdapi-webui@0: {score}")
    assert score <= 3.0, out


def test_kill_9_of_every_instance_comes_back_ready(host):
    for instance in PORTS:
        host.check_output(f"systemctl kill -s KILL sdapi-webui@{instance}")
    for instance in PORTS:
        _wait_ready(host, instance)


def test_service_starts_without_any_network(host):
    """Cut the container off its network (only loopback stays), restart, expect readiness."""
    name = molecule_env.name_of(host)
    network = "sdapi-molecule-webui"
    subprocess.run(["podman", "network", "disconnect", network, name], check=True)
    try:
        routes = host.check_output("ip -4 route")
        assert routes == "", f"the container still has routes: {routes}"
        host.check_output("systemctl restart sdapi-webui@0")
        log = _wait_ready(host, 0)
        assert "Model loaded in" in log
    finally:
        subprocess.run(["podman", "network", "connect", network, name], check=True)


def _converge(**extra_vars):
    return molecule_env.ansible_playbook(molecule_env.converge_playbook(), extra_vars=extra_vars or None)


def _data_snapshot(host):
    return host.check_output("cd /var/lib/sdapi && find models outputs -type f -exec sha256sum {} + | sort")


def _invocations(host):
    return {i: host.check_output(f"systemctl show -p InvocationID --value sdapi-webui@{i}") for i in PORTS}


def _listed(host, port):
    status, payload = _api(host, port, "sd-models")
    assert status == 200, payload
    return sorted(m["model_name"] for m in json.loads(payload))


def test_model_added_to_the_inventory_is_usable_without_a_restart(host):
    before = _invocations(host)
    # The scenario's two models, as its inventory lists them, plus a third.
    models = [{"name": name, "url": f"file:///srv/models/{name}",
               "sha256": host.file(f"/srv/models/{name}").sha256sum} for name in ("tiny.safetensors", "legacy.ckpt")]
    models.append(dict(models[0], name="added.safetensors"))
    try:
        rc, output, _recap = _converge(webui_models=models)
        assert rc == 0, output[-3000:]
        assert _invocations(host) == before, "adding a model must not restart the instances"
        for port in PORTS.values():
            assert "added" in _listed(host, port)
    finally:
        host.check_output(f"rm -f {MODELS}/added.safetensors")
        for port in PORTS.values():
            host.check_output(f"curl -sf -u {AUTH} -X POST -H 'content-type: application/json' -d '{{}}' "
                              f"http://127.0.0.1:{port}/sdapi/v1/refresh-checkpoints")


def test_altered_converted_checkpoint_is_converted_again(host):
    record = host.file("/etc/sdapi/converted-models.json")
    assert (record.user, record.group, record.mode) == ("root", "root", 0o644)
    recorded = json.loads(record.content_string)[f"{MODELS}/legacy.safetensors"]
    assert host.file(f"{MODELS}/legacy.safetensors").sha256sum == recorded
    host.check_output(f"runuser -u sdapi -- sh -c 'printf tampered >> {MODELS}/legacy.safetensors'")
    rc, output, _recap = _converge()
    assert rc == 0, output[-3000:]
    assert host.file(f"{MODELS}/legacy.safetensors").sha256sum == recorded
    assert not host.file("/var/lib/sdapi/staging/legacy.ckpt").exists


def test_upgrade_to_a_broken_release_rolls_back_with_the_reason(host):
    host.check_output("runuser -u sdapi -- sh -c 'echo kept > /var/lib/sdapi/outputs/marker.txt'")
    before = _data_snapshot(host)
    rc, output, recap = _converge(webui_version="broken")
    assert rc != 0
    assert "this release is broken on purpose" in output
    assert "Rolled back to /opt/sdapi/webui/releases/v1" in output
    assert host.file("/opt/sdapi/webui/current").linked_to == "/opt/sdapi/webui/releases/v1"
    for instance in PORTS:
        assert "Version: v1.10.1-double" in _wait_ready(host, instance)
    assert _data_snapshot(host) == before


def test_upgrade_to_a_good_release_runs_it_then_back(host):
    rc, output, _recap = _converge(webui_version="v2")
    assert rc == 0, output[-3000:]
    assert host.file("/opt/sdapi/webui/current").linked_to == "/opt/sdapi/webui/releases/v2"
    assert "Version: v2-double" in _wait_ready(host, 0)
    rc, output, _recap = _converge()
    assert rc == 0, output[-3000:]
    assert host.file("/opt/sdapi/webui/current").linked_to == "/opt/sdapi/webui/releases/v1"
