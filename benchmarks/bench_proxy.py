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

The double sets TCP_NODELAY as uvicorn (the real A1111's server) does. Before it did, every
kept-alive answer waited ~40 ms for the client's delayed ACK (Nagle), which buried nginx's
share of the latency.
"""

from __future__ import annotations

import re

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
    # One connection: the latency a lone client sees. Four: a few clients at once (the
    # backend is one Python process, like A1111's uvicorn), under the client's limit.
    _measure(report, name, assets, "double", (1, 4), seconds, rounds)
