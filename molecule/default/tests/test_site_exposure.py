"""What the whole node exposes: TLS versions on 443, every route the allowlist leaves out
refused with 403 even with a valid key (and never reaching a webui instance), and the
systemd sandbox exposure of the webui instances and of nginx.

The role scenarios prove the same per role against stand-ins; here it is the site
playbook's result with both roles on one host.
"""

from __future__ import annotations

import time

import pytest

from sdapi_testlib import http, site

# Times this module and prints the running total of the whole-site modules.
site_timer = site.module_timer()

WEBUI_EXPOSURE_MAX = 3.0


@pytest.mark.parametrize("flag,accepted", [("-tls1", False), ("-tls1_1", False),
                                           ("-tls1_2", True), ("-tls1_3", True)])
def test_tls_versions_on_the_https_port(node, request, flag, accepted):
    ok, detail = site.tls_handshake(node, flag)
    site.report(request.config, f"TLS {flag}: {'accepted, ' if ok else 'refused, '}{detail}")
    assert ok == accepted, detail
    if not accepted:
        assert "protocol version" in detail, detail


def test_every_denied_route_is_403_with_a_valid_key(node, request):
    # site-other: its own rate budget, apart from the key test_site.py spends.
    key = site.clients()["site-other"]
    denied = site.denied_requests()
    # Every route the role itself calls dangerous is among them: the allowlist left it out.
    assert {(m, f"/sdapi/v1/{r}") for m, r in site.dangerous_routes()} <= set(denied)
    since = node.check_output("date +%s.%N")
    run = site.run_requests(node, {"denied": [site.request(m, p, key, {} if m != "GET" else None)
                                              for m, p in denied]}, workers=2, max_seconds=30)
    answers = {f"{r['method']} {r['path']}": r["status"] for r in run["results"]}
    site.report(request.config, f"denied routes: {len(answers)} requests with a valid key in "
                                f"{run['elapsed']:.1f} s, statuses {sorted(set(answers.values()))}")
    assert run["unsent"] == 0 and len(answers) == len(denied)
    assert {k: v for k, v in answers.items() if v != 403} == {}
    # --api-log writes one line per /sdapi request an instance handled: none may have.
    time.sleep(0.5)
    reached = node.run(f"journalctl --no-pager -o cat --since @{since} -u 'sdapi-webui@*' --grep '^API '").stdout
    assert reached.strip() == "" or "-- No entries --" in reached, reached


def test_webui_ports_refuse_a_local_process_without_the_backend_credential(node, request):
    # Loopback is open to every local process (the firewall accepts lo): --api-auth is what
    # keeps them from the backend, and what the proxy alone holds.
    answers = {}
    for instance, port in site.instances(node).items():
        status, _headers, _body = http.curl(node, f"http://127.0.0.1:{port}/sdapi/v1/sd-models")
        answers[port] = (status, site.backend(node, port, "sd-models")[0])
    site.report(request.config, f"webui ports without / with the backend credential: {answers}")
    assert set(answers.values()) == {(401, 200)}


@pytest.mark.parametrize("unit", ["sdapi-webui@0.service", "nginx.service"])
def test_sandbox_exposure(node, request, unit):
    score, verdict = site.exposure(node, unit)
    site.report(request.config, f"systemd-analyze security {unit}: {score} {verdict}")
    # nginx.service is Debian's unit, which the proxy role leaves as shipped: reported only.
    if unit.startswith("sdapi-webui@"):
        assert score <= WEBUI_EXPOSURE_MAX, f"{unit}: {score} {verdict}"
