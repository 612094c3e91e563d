"""Measurement 4: what the nginx front adds to a light API route, with keep-alive.

wrk (Debian's package, installed inside the converged site container) runs inside the
container against its own loopback, so the figures hold nginx and the backend only, not
podman's port forwarding or the controller. Same route, same wrk settings, one after the
other in this run:
  direct   http://127.0.0.1:7861/sdapi/v1/options   (the webui double; no --api-auth here)
  proxied  https://127.0.0.1/sdapi/v1/options       (TLS, API key, route allowlist, limits,
                                                     upstream keep-alive)
The bench client has its own status budget (nginx_proxy_clients[].status_rate/burst, see
lib.node_vars), so no request is refused with 429; any non-2xx answer fails the benchmark.

Twice: with the double as the site deployed it, and with TCP_NODELAY patched into the
deployed release (restored afterwards), because the stock double stalls 40 ms on every
kept-alive response (NAGLE_NOTE below), which buries nginx's share of the latency.
"""

from __future__ import annotations

import re
import time

import lib
from lib import Report, ms

ROUTE = "/sdapi/v1/options"
P50_ADDED_TARGET = 1.0   # ms
P99_ADDED_TARGET = 5.0   # ms
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse(out: str) -> dict:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {pct}% line in wrk's output:\n{out}")
        return float(m.group(1)) * UNIT[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.+)", out)
    return {"p50": latency("50"), "p90": latency("90"), "p99": latency("99"),
            "rps": float(rps.group(1)) if rps else 0.0, "requests": int(total.group(1)) if total else 0,
            "non2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def _wrk(name: str, url: str, conns: int, seconds: int, headers: list[str]) -> dict:
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for h in headers:
        args += ["-H", h]
    out = lib.pexec(name, *args, url, timeout=seconds + 60).stdout
    return _parse(out)


NAGLE_NOTE = ("The stock double answers every kept-alive request about 40 ms late: http.server sends the "
              "headers and the body in two writes without TCP_NODELAY, so Nagle holds the body until the "
              "client's delayed ACK of the headers (40 ms on Linux). The first request of a connection is "
              "not delayed (0.4 ms), the next ones are (~40 ms). uvicorn, which the real A1111 runs, sets "
              "TCP_NODELAY. In tests/webui_double/modules/api.py, `disable_nagle_algorithm = True` on the "
              "handler class would fix it; the rows marked TCP_NODELAY patch exactly that into the deployed "
              "release inside the benchmark container only (then restore it), so nginx's own cost is visible.")
API_PY = "/opt/sdapi/webui/current/modules/api.py"


def _restart_backend(name: str) -> None:
    lib.pexec(name, "systemctl", "restart", "sdapi-webui@0.service")
    deadline = time.monotonic() + 120
    while lib.pexec(name, "python3", "-c", "import urllib.request; urllib.request.urlopen("
                    f"'http://127.0.0.1:7861{ROUTE}', timeout=2)", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the webui double did not answer after its restart")
        time.sleep(0.5)


def _measure(report: Report, name: str, assets: lib.Assets, variant: str, conn_counts: tuple[int, ...],
             seconds: int, rounds: int) -> None:
    auth = [f"Authorization: Bearer {assets.api_key}"]
    cases = [("direct", f"http://127.0.0.1:7861{ROUTE}", []),
             ("proxied", f"https://127.0.0.1{ROUTE}", auth)]
    for conns in conn_counts:
        got: dict[str, list[dict]] = {"direct": [], "proxied": []}
        # Direct and proxied alternate, round after round: colleagues' jobs on the same two
        # cores come and go, and alternating spreads that noise over both sides evenly.
        for _round in range(rounds):
            for label, url, headers in cases:
                _wrk(name, url, conns, 1, headers)  # warm-up: TLS session, upstream keep-alive
                res = _wrk(name, url, conns, seconds, headers)
                got[label].append(res)
                if res["non2xx"] or res["socket_errors"] or not res["requests"]:
                    report.fail(f"wrk {label} ({variant}) with {conns} connection(s): {res['non2xx']} non-2xx "
                                f"answers, socket errors: {res['socket_errors'] or 'none'}, "
                                f"{res['requests']} requests")

        def med(label: str, key: str) -> float:
            return lib.median([r[key] for r in got[label]])

        d50, d99, p50, p99 = med("direct", "p50"), med("direct", "p99"), med("proxied", "p50"), med("proxied", "p99")
        add50, add99 = p50 - d50, p99 - d99
        report.add("4", f"{variant}: GET {ROUTE}, wrk -t1 -c{conns} -d{seconds}s x {rounds} keep-alive, added by "
                        f"nginx TLS p50 / p99",
                   f"{add50:+.3f} ms / {add99:+.3f} ms",
                   f"direct {ms(d50)} / {ms(d99)}; proxied {ms(p50)} / {ms(p99)}",
                   f"{p50 / d50:.2f}x / {p99 / d99:.2f}x",
                   f"< +{P50_ADDED_TARGET:.0f} ms / < +{P99_ADDED_TARGET:.0f} ms",
                   add50 < P50_ADDED_TARGET and add99 < P99_ADDED_TARGET)
        report.note("4", f"{variant}, {conns} connection(s), per round (direct | proxied): "
                         + "; ".join(f"p50 {ms(a['p50'])} p99 {ms(a['p99'])} {a['rps']:.0f} req/s | "
                                     f"p50 {ms(b['p50'])} p99 {ms(b['p99'])} {b['rps']:.0f} req/s"
                                     for a, b in zip(got["direct"], got["proxied"])))


def proxy(report: Report, name: str, assets: lib.Assets) -> None:
    seconds, rounds = (3, 1) if lib.quick() else (10, 3)
    lib.say(f"proxy: installing wrk in {name}")
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null"
    if lib.pexec(name, "sh", "-c", install, check=False).returncode != 0:
        lib.pexec(name, "sh", "-c", f"apt-get update -q >/dev/null && {install}")
    # The stock double's figures are its 40 ms stall (below); one connection shows it.
    _measure(report, name, assets, "stock double", (1,), seconds, rounds)
    report.note("4", NAGLE_NOTE)
    # Same measurement with the backend's Nagle stall removed, then the release restored.
    lib.pexec(name, "cp", "-p", API_PY, "/root/api.py.orig")
    try:
        lib.pexec(name, "sed", "-i", 's/^\\( *\\)protocol_version = "HTTP\\/1.1"$/&\\n\\1disable_nagle_algorithm = True/',
                  API_PY)
        if "disable_nagle_algorithm = True" not in lib.pexec(name, "cat", API_PY).stdout:
            raise RuntimeError(f"could not patch TCP_NODELAY into {API_PY}")
        _restart_backend(name)
        # One connection: the latency a lone client sees. Four: a few clients at once (the
        # backend is one Python process, like A1111's uvicorn), under the client's limit.
        _measure(report, name, assets, "double with TCP_NODELAY", (1, 4), seconds, rounds)
    finally:
        lib.pexec(name, "cp", "-p", "/root/api.py.orig", API_PY, check=False)
        _restart_backend(name)
