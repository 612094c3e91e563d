"""A bounded burst of mixed API traffic from both clients at once, against the whole node.

Both API keys of the inventory send generations, progress polls, model and option reads
and a denied route, four connections each, all at the same time, from inside the node to
nginx on its loopback (the load never leaves the container). Bounded: 190 requests, at
most 60 s. Expected: no 5xx and no failed connection; 200 or 429 on allowed routes, 403
exactly on the denied one; the webui instances as healthy afterwards as before; and the
nginx JSON access log holding one line per request, per client and status, between two
marker requests.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from sdapi_testlib import site

# Times this module and prints the running total of the whole-site modules.
site_timer = site.module_timer()

DENIED_ROUTE = "/sdapi/v1/cmd-flags"
# Per client: (method, route, body, count). 95 per client, 190 in all.
MIX = [
    ("POST", "/sdapi/v1/txt2img", site.TXT2IMG, 20),
    ("GET", "/sdapi/v1/progress", None, 30),
    ("GET", "/sdapi/v1/sd-models", None, 20),
    ("GET", "/sdapi/v1/options", None, 15),
    ("GET", DENIED_ROUTE, None, 10),
]
WORKERS_PER_CLIENT = 4
MAX_SECONDS = 60


def _plan(name: str, key: str) -> list:
    requests = []
    for method, route, body, count in MIX:
        requests += [site.request(method, route, key, body)] * count
    # A fixed shuffle per client: a realistic interleaving that is the same on every run.
    random.Random(name).shuffle(requests)
    return requests


@pytest.fixture(scope="module")
def burst(node):
    """The burst, framed by two marker requests in the access log; returns (run, log entries)."""
    # Steady state: every instance ready, and nginx workers that hold no instance marked
    # down from an earlier outage (test_site_faults proves that gap on its own).
    assert site.all_ready(node)
    site.settle_proxy(node)
    states = {i: site.unit_state(node, f"sdapi-webui@{i}.service") for i in site.instances(node)}
    marker = f"/site-load-{uuid.uuid4().hex[:12]}"
    site.run_requests(node, {"marker": [site.request("GET", f"{marker}-begin")]})
    run = site.run_requests(node, {name: _plan(name, key) for name, key in site.clients().items()},
                            workers=WORKERS_PER_CLIENT, max_seconds=MAX_SECONDS)
    site.run_requests(node, {"marker": [site.request("GET", f"{marker}-end")]})
    entries = site.access_log_between(node, f"{marker}-begin", f"{marker}-end")
    return run, entries, states


def test_burst_is_bounded_and_fully_sent(burst, request):
    run, _entries, _states = burst
    sent = Counter(r["lane"] for r in run["results"])
    site.report(request.config, f"load: {sum(sent.values())} requests from {len(sent)} clients "
                                f"({WORKERS_PER_CLIENT} connections each) in {run['elapsed']:.1f} s")
    assert run["unsent"] == 0 and run["elapsed"] <= MAX_SECONDS + 30
    assert sent == {name: sum(m[3] for m in MIX) for name in site.clients()}


def test_no_5xx_and_only_200_403_429(burst, request):
    run, _entries, _states = burst
    by_client = {name: Counter(r["status"] for r in run["results"] if r["lane"] == name) for name in site.clients()}
    by_route = Counter((r["path"].rsplit("/", 1)[-1], r["status"]) for r in run["results"])
    site.report(request.config, "load statuses per client: "
                + "; ".join(f"{name} {dict(sorted(c.items()))}" for name, c in by_client.items()))
    site.report(request.config, f"load statuses per route: {dict(sorted(by_route.items()))}")
    failed = [r for r in run["results"] if r["status"] == 0 or r["status"] >= 500]
    assert failed == [], failed[:5]
    assert {r["status"] for r in run["results"]} <= {200, 403, 429}
    # 403 is the answer of the denied route, always, and of nothing else.
    assert all((r["status"] == 403) == (r["path"] == DENIED_ROUTE) for r in run["results"])
    # Every client got generations through and was cut by its generation limit.
    for name in site.clients():
        statuses = Counter(r["status"] for r in run["results"] if r["lane"] == name and r["path"].endswith("txt2img"))
        assert statuses[200] >= 1 and statuses[429] >= 1, (name, statuses)


def test_access_log_accounts_for_every_request(burst, request):
    run, entries, _states = burst
    logged = Counter((e["client"], e["route"], e["status"]) for e in entries)
    sent = Counter((r["lane"], r["path"], r["status"]) for r in run["results"])
    per_client = Counter(e["client"] for e in entries)
    site.report(request.config, f"access log between the markers: {len(entries)} lines, per client {dict(per_client)}")
    assert logged == sent


def test_backend_healthy_after_the_burst(node, burst, request):
    _run, _entries, before = burst
    served = Counter()
    for instance, port in site.instances(node).items():
        state = site.unit_state(node, f"sdapi-webui@{instance}.service")
        assert state["ActiveState"] == "active", state
        was = before[instance]
        assert (state["InvocationID"], state["NRestarts"]) == (was["InvocationID"], was["NRestarts"]), state
        status, answer = site.backend(node, port, "txt2img", "POST", site.TXT2IMG)
        assert status == 200 and site.model_of(answer) == "double", answer
        log = node.check_output(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={state['InvocationID']}")
        served[instance] = log.count("POST /sdapi/v1/txt2img")
    site.report(request.config, f"txt2img served per instance since its start: {dict(served)}")
