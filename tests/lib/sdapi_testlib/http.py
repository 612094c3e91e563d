"""HTTP(S) requests made from inside a test container to its own loopback (test-only).

curl covers single requests; a burst needs many requests within a bounded time and their
status codes and headers, so a small stdlib script runs inside the container instead.
"""

from __future__ import annotations

import json

# argv: method url count max_seconds headers-json body. Sends `count` requests one after
# another on fresh connections (never more than max_seconds in all) and prints JSON:
# {"elapsed": s, "results": [{"status": int, "retry_after": str|null, "body": str}]}.
_BURST = r"""
import http.client, json, ssl, sys, time, urllib.parse
method, url, count, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
headers, body = json.loads(sys.argv[5]), sys.argv[6].encode() or None
u = urllib.parse.urlsplit(url)
ctx = ssl._create_unverified_context()
results, start = [], time.monotonic()
for _ in range(count):
    if time.monotonic() - start > limit:
        break
    conn = http.client.HTTPSConnection(u.hostname, u.port or 443, context=ctx, timeout=10)
    conn.request(method, u.path, body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode(errors="replace")
    results.append({"status": resp.status, "retry_after": resp.getheader("Retry-After"),
                    "body": text[:200]})
    conn.close()
print(json.dumps({"elapsed": time.monotonic() - start, "results": results}))
"""


def burst(node, url, count, max_seconds, method="POST", headers=None, body="{}"):
    """Send `count` requests from inside the node, bounded by max_seconds; parsed results."""
    out = node.check_output(
        "timeout %s python3 -c %s %s %s %s %s %s %s",
        str(int(max_seconds) + 15),
        _BURST,
        method,
        url,
        str(count),
        str(max_seconds),
        json.dumps(headers or {}),
        body,
    )
    return json.loads(out)


def curl(node, url, *args):
    """One request with curl inside the node (certificate not verified: it is self-signed).

    Returns (status, headers text, body).
    """
    result = node.run(
        "curl -sk --max-time 20 -D /dev/stderr -o /dev/stdout %s " + " ".join(["%s"] * len(args)),
        url,
        *args,
    )
    headers = result.stderr
    status_line = [line for line in headers.splitlines() if line.startswith("HTTP/")]
    status = int(status_line[-1].split()[1]) if status_line else 0
    return status, headers, result.stdout
