"""What an adversarial run against 0.2.0 found (issue 22), each as the client meets it.

Every request goes from inside the container to its own loopback, through nginx to the
A1111 stand-in, whose request log (path with query, body size and sha256) says what
reached the backend. The test of each finding fails against the 0.2.0 configuration (the
HTTP/2 log line on Debian 12 only: Debian 13's nginx answers 400 and logs it); the tests
that say "still" or "unchanged" guard what the fixes must keep working.
"""

import base64
import json

import pytest
import raw_http2
from scenario_data import clients

from sdapi_testlib import http

BASE = "https://127.0.0.1"
ALICE, DEMO, ERIN = (clients()[n] for n in ("alice", "demo", "erin"))
BACKEND_LOG = "/var/log/backend-standin.jsonl"
ACCESS_LOG = "/var/log/nginx/sdapi-access.log"
IMAGE_ROUTES = ["img2img", "extra-single-image", "extra-batch-images", "interrogate", "png-info"]
IMAGE_BODY = "/tmp/img2img-request.json"

# A real PNG of about 3 MB (random pixels do not compress), as img2img's JSON carries it:
# base64 in a data URL, about 4.2 MB in all.
_MAKE_IMAGE_BODY = r"""
import base64, json, os, struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
w = h = 1024
rows = b"".join(b"\x00" + os.urandom(w * 3) for _ in range(h))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))
body = {"init_images": ["data:image/png;base64," + base64.b64encode(png).decode()],
        "image": base64.b64encode(png).decode(), "prompt": "a private prompt", "steps": 1}
with open(sys.argv[1], "w") as out:
    json.dump(body, out)
print(len(png))
"""


def bearer(client):
    return f"Authorization: Bearer {client['key']}"


def backend_requests(host):
    out = host.run(f"cat {BACKEND_LOG}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def assert_json_error(status, headers, body, expected):
    """One JSON shape for every error the proxy answers itself, never nginx's HTML page."""
    assert status == expected, headers + body
    assert "content-type: application/json" in headers.lower(), headers
    answer = json.loads(body)
    assert {"error", "detail"} <= set(answer), answer
    assert "<html" not in body and "nginx" not in body, body


@pytest.fixture(scope="module")
def image_body(host):
    png_size = int(host.check_output("python3 -c %s %s", _MAKE_IMAGE_BODY, IMAGE_BODY))
    body_size = int(host.check_output(f"stat -c %s {IMAGE_BODY}"))
    sha256 = host.check_output(f"sha256sum {IMAGE_BODY}").split()[0]
    assert png_size > 2 * 2**20 and body_size > 4 * 2**20
    return {"size": body_size, "sha256": sha256}


# --- 1. image routes take bodies up to nginx_proxy_image_body_size -----------------------
@pytest.mark.parametrize("route", IMAGE_ROUTES)
def test_image_route_takes_a_multi_megabyte_png(host, image_body, route):
    # 0.2.0: 500, the auth subrequest inherited the server's 1m body limit.
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/{route}", "-X", "POST", "-H", bearer(ALICE),
                                      "-H", "Content-Type: application/json", "--data-binary", f"@{IMAGE_BODY}")
    assert status == 200, headers + body[:500]
    reached = backend_requests(host)[before:]
    assert [(r["path"], r["body_bytes"], r["body_sha256"]) for r in reached] == [
        (f"/sdapi/v1/{route}", image_body["size"], image_body["sha256"])]


def test_large_image_without_a_key_is_401(host, image_body):
    # 0.2.0: 500 (the same subrequest failure) instead of asking for a key.
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/img2img", "-X", "POST",
                                      "--data-binary", f"@{IMAGE_BODY}")
    assert_json_error(status, headers, body, 401)
    assert "www-authenticate:" in headers.lower()
    assert len(backend_requests(host)) == before


def test_image_route_still_refuses_a_body_over_its_limit(host):
    # The announced length alone is refused (50m + 1 byte), before any body is read.
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/img2img", "--http1.1", "-X", "POST",
                                      "-H", bearer(ALICE), "-H", "Content-Length: 52428801", "--data-binary", "{}")
    assert_json_error(status, headers, body, 413)


# --- 2. a name never shares a limit key with an address ---------------------------------
def test_an_address_cannot_spend_a_named_clients_budget(host):
    # 0.2.0 keyed unknown callers by $binary_remote_addr and clients by name: "demo" and
    # 100.101.109.111 were the same four bytes, so one budget.
    address = "100.101.109.111"
    assert bytes(int(part) for part in address.split(".")) == DEMO["name"].encode()
    host.run_expect([0], f"ip address add {address}/32 dev lo")
    try:
        # Requests without a key from that address (to 127.0.0.1, from the added source),
        # bounded: 9 requests, beyond the generation rate + burst (1 + 6).
        out = host.check_output(
            "for i in $(seq 9); do curl -sk --max-time 10 -o /dev/null -w '%%{http_code} ' "
            "--interface %s -X POST -d '{}' %s; done", address, f"{BASE}/sdapi/v1/txt2img")
        statuses = [int(s) for s in out.split()]
        assert set(statuses) == {401, 429}, statuses  # the address has a budget, and spent it
        status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/txt2img", "-X", "POST",
                                          "-H", bearer(DEMO), "-d", "{}")
        assert status == 200, headers + body
    finally:
        host.run(f"ip address del {address}/32 dev lo")


# --- 3. keys and Basic credentials match exactly -----------------------------------------
@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
@pytest.mark.parametrize("credential", ["bearer", "basic"])
def test_case_swapped_credential_is_401(host, protocol, credential):
    # 0.2.0: 200; nginx compares a map's string keys without regard to case.
    if credential == "bearer":
        right, swapped = ["-H", bearer(ALICE)], ["-H", f"Authorization: Bearer {ALICE['key'].swapcase()}"]
    else:
        value = base64.b64encode(f"alice:{ALICE['basic_password']}".encode()).decode()
        right, swapped = ["-u", f"alice:{ALICE['basic_password']}"], ["-H", f"Authorization: Basic {value.swapcase()}"]
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models", protocol, *swapped)
    assert_json_error(status, headers, body, 401)
    assert len(backend_requests(host)) == before
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models", protocol, *right)
    assert status == 200, headers + body
    assert headers.startswith("HTTP/1.1" if protocol == "--http1.1" else "HTTP/2"), headers


def test_scheme_name_matches_in_any_case(host):
    # HTTP defines the scheme name as case-insensitive; the credential itself is exact.
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models",
                                      "-H", f"Authorization: bEARER {ALICE['key']}")
    assert status == 200, headers + body


# --- 4. the access log stays JSON ---------------------------------------------------------
@pytest.mark.parametrize("field", [["X-Sdapi-Upper", "name in uppercase"], ["x-sdapi-crlf", "a\r\nb"]],
                         ids=["uppercase name", "CRLF in value"])
def test_invalid_http2_header_leaves_a_json_log_line(host, field):
    # 0.2.0 logged such a request with "status":000, which strict JSON readers reject.
    before = len(host.check_output(f"cat {ACCESS_LOG}").splitlines())
    answer = raw_http2.request(host, [[":method", "GET"], [":scheme", "https"],
                                      [":path", "/sdapi/v1/sd-models"], [":authority", "localhost"],
                                      ["authorization", f"Bearer {ERIN['key']}"], field])
    assert answer["status"] in (None, 400) and answer["status"] != 200, answer
    lines = host.check_output(f"cat {ACCESS_LOG}").splitlines()
    entries = [json.loads(line) for line in lines]  # every line, not only the new ones
    # nginx 1.22 (Debian 12) resets the stream and logged it as 000; 1.26 (Debian 13)
    # answers 400 (through the error page, whose internal URI the log shows as the route).
    new = [e["status"] for e in entries[before:]]
    assert new in ([0], [400]), entries[before:]


# --- 5. a key in a query string reaches no log --------------------------------------------
def test_query_key_absent_from_every_log(host, image_body):
    # 0.2.0 forwarded queries on every route (the stand-in's log stands for A1111's
    # api-log) and nginx wrote the request line of a 403 or 413 into error.log.
    leaked = ALICE["key"]
    query = f"api_key={leaked}"
    since = host.check_output("date +%s")
    before = len(backend_requests(host))
    requests = [
        ("GET", f"{BASE}/sdapi/v1/sd-models?{query}", []),
        ("GET", f"{BASE}/sdapi/v1/sd-models?{query}", ["-H", bearer(ERIN)]),
        ("GET", f"{BASE}/sdapi/v1/progress?skip_current_image=true&{query}", []),
        ("GET", f"{BASE}/sdapi/v1/cmd-flags?{query}", ["-H", bearer(ERIN)]),
        ("DELETE", f"{BASE}/sdapi/v1/txt2img?{query}", ["-H", bearer(ERIN)]),
        ("POST", f"{BASE}/sdapi/v1/txt2img?{query}", ["-H", bearer(ERIN), "--data-binary", f"@{IMAGE_BODY}"]),
        ("GET", f"http://127.0.0.1/sdapi/v1/sd-models?{query}", []),
    ]
    answers = [http.curl(host, url, "-X", method, *args) for method, url, args in requests]

    logs = host.check_output("cat /var/log/nginx/*.log %s", BACKEND_LOG)
    journal = host.check_output(f"journalctl --no-pager --since @{since}")
    assert leaked not in logs and leaked not in journal
    assert len(backend_requests(host)) == before, "a request with a refused query reached the backend"
    for status, headers, body in answers:
        assert_json_error(status, headers, body, 400)
        assert json.loads(body)["detail"] == "query string not accepted on this route"


def test_declared_query_argument_still_reaches_the_backend(host):
    # A1111 clients poll progress?skip_current_image=true; that one argument is declared.
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/progress?skip_current_image=true")
    assert status == 200, headers + body
    assert [r["path"] for r in backend_requests(host)[before:]] == ["/sdapi/v1/progress?skip_current_image=true"]


# --- authenticate first: the allowlist stays hidden from callers without a key -----------
PROBES = [("GET", "/sdapi/v1/cmd-flags"), ("POST", "/sdapi/v1/options"), ("DELETE", "/sdapi/v1/txt2img"),
          ("GET", "/sdapi/v1/txt2img"), ("POST", "/sdapi/v1/progress"), ("GET", "/docs"),
          ("GET", "/file=/etc/passwd"), ("GET", "/sdapi/v1/no-such-route")]


@pytest.mark.parametrize("keyed", [False, True], ids=["without a key", "with a key"])
def test_unknown_caller_cannot_map_the_allowlist(host, keyed):
    # 0.2.0 without a key: 403 for a denied route, 401 for an allowed one, and two 403 texts.
    auth = ["-H", bearer(ERIN)] if keyed else []
    answers = {}
    for method, path in PROBES:
        status, headers, body = http.curl(host, f"{BASE}{path}", "--path-as-is", "-X", method, *auth)
        assert_json_error(status, headers, body, 403 if keyed else 401)
        answers[f"{method} {path}"] = body
    assert len(set(answers.values())) == 1, answers


# --- every error the proxy sends is the same JSON shape; no backend traceback -------------
ERRORS = [
    ("unsupported method", ["--http1.1", "-X", "TRACE", f"{BASE}/"], 405),
    ("no Host header", ["--http1.1", "-H", "Host:", f"{BASE}/sdapi/v1/sd-models"], 400),
    ("URI too long", ["--http1.1", f"{BASE}/sdapi/v1/{'a' * 9000}"], 414),
    ("unknown transfer encoding", ["--http1.1", "-X", "POST", "-H", "Transfer-Encoding: gzip",
                                   "-d", "{}", f"{BASE}/sdapi/v1/interrupt"], 501),
    ("plain HTTP on the HTTPS port", ["--http1.1", "http://127.0.0.1:443/sdapi/v1/sd-models"], 400),
    ("body over the route's limit", ["-X", "POST", "--data-binary", f"@{IMAGE_BODY}",
                                     f"{BASE}/sdapi/v1/txt2img"], 413),
    ("backend exception", ["-X", "POST", "-d", '{"x": "__standin_raise__"}', f"{BASE}/sdapi/v1/interrupt"], 500),
    ("backend refused the proxy's credential",
     ["-X", "POST", "-d", '{"x": "__standin_refuse__"}', f"{BASE}/sdapi/v1/interrupt"], 502),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_every_error_is_the_proxys_json(host, image_body, case):
    _name, args, expected = case
    status, headers, body = http.curl(host, args[-1], "-H", bearer(ERIN), *args[:-1])
    assert_json_error(status, headers, body, expected)
    assert "Traceback" not in body and "STANDIN-TRACEBACK" not in body


def test_backend_down_is_the_proxys_json(host):
    host.run_expect([0], "systemctl stop sdapi-backend-standin.service")
    try:
        status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models", "-H", bearer(ERIN))
        assert_json_error(status, headers, body, 502)
    finally:
        host.run_expect([0], "systemctl start sdapi-backend-standin.service")
        host.run_expect([0], "for i in $(seq 20); do curl -s -o /dev/null http://127.0.0.1:7861/sdapi/v1/progress "
                             "&& exit 0; sleep 0.5; done; exit 1")


def test_the_apis_own_client_errors_pass_unchanged(host):
    # A1111's 4xx are JSON that tells the client what to fix ("Sampler not found").
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/interrupt", "-X", "POST", "-H", bearer(ERIN),
                                      "-d", '{"x": "__standin_bad_sampler__"}')
    assert status == 400, headers + body
    assert json.loads(body) == {"detail": "Sampler not found"}
