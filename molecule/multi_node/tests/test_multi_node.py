"""A proxy in front of two GPU hosts: requests are spread over both backends, the API keeps
answering with one backend down, and a webui port answers the proxy and nobody else."""

from __future__ import annotations

import json
import re
import time

import pytest
from sdapi_testlib import http, molecule_env, net

testinfra_hosts = ["local://"]

KEY = "test-fleet-0123456789abcdefghiKEY"
API = "https://127.0.0.1/sdapi/v1"
TXT2IMG = json.dumps({"prompt": "a fleet", "width": 64, "height": 64, "steps": 2, "seed": 1})
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def proxy():
    return molecule_env.host(molecule_env.group_hosts("sdapi_proxy")[0])


@pytest.fixture(scope="module")
def gpus():
    return [molecule_env.host(name) for name in molecule_env.group_hosts("sdapi_webui")]


def served(node) -> int:
    """txt2img requests the instance logged (A1111's --api-log line, one per request)."""
    log = node.check_output("journalctl -u sdapi-webui@0 --no-pager -o cat")
    return len(re.findall(r"^API .* POST /sdapi/v1/txt2img", log, re.MULTILINE))


def wait_ready(node, address, timeout=120):
    deadline = time.monotonic() + timeout
    while net.tcp_state(node, address, 7861) != "open":
        assert time.monotonic() < deadline, "the instance did not come back"
        time.sleep(1)


def test_requests_are_spread_over_both_backends(proxy, gpus):
    before = [served(g) for g in gpus]
    result = http.burst(proxy, f"{API}/txt2img", 8, 120, headers=HEADERS, body=TXT2IMG)
    statuses = [r["status"] for r in result["results"]]
    assert statuses == [200] * 8, result
    counts = [served(g) - b for g, b in zip(gpus, before)]
    print(f"txt2img per backend: {counts} in {result['elapsed']:.1f} s")
    assert sum(counts) == 8
    assert all(c >= 2 for c in counts), counts


@pytest.fixture()
def one_backend_stopped(gpus):
    down = gpus[0]
    down.check_output("systemctl stop sdapi-webui@0")
    yield down, gpus[1]
    down.check_output("systemctl start sdapi-webui@0")
    wait_ready(down, molecule_env.address_of(down))


def test_api_answers_with_one_backend_stopped(proxy, one_backend_stopped):
    down, up = one_backend_stopped
    before = served(up)
    result = http.burst(proxy, f"{API}/txt2img", 10, 120, headers=HEADERS, body=TXT2IMG)
    statuses = [r["status"] for r in result["results"]]
    print(f"one backend down: {statuses.count(200)}/10 answered 200 in {result['elapsed']:.1f} s")
    assert statuses == [200] * 10, result
    assert served(up) - before == 10


def test_webui_port_answers_only_the_proxy(proxy, gpus):
    first, second = gpus
    address = molecule_env.address_of(first)
    assert net.tcp_state(proxy, address, 7861) == "open"
    assert net.tcp_state(second, address, 7861) == "timeout"


def test_webui_refuses_requests_without_the_backend_credentials(proxy, gpus):
    address = molecule_env.address_of(gpus[0])
    status = proxy.check_output(
        "curl -s -o /dev/null -w '%%{http_code}' --max-time 10 http://%s:7861/sdapi/v1/sd-models", address)
    assert status == "401"


def test_only_ssh_and_the_web_ports_of_the_proxy_are_reachable_from_a_gpu_host(proxy, gpus):
    address = molecule_env.address_of(proxy)
    probed = [22, 80, 443, 7861, 8080, 9090, 3000, 5000]
    net.start_listeners(proxy, probed)
    try:
        states = {port: net.tcp_state(gpus[0], address, port) for port in probed}
    finally:
        proxy.run("systemctl stop sdapi-test-listeners.service")
    print(f"proxy ports seen from {molecule_env.name_of(gpus[0])}: {states}")
    assert {p for p, s in states.items() if s == "open"} == {22, 80, 443}
