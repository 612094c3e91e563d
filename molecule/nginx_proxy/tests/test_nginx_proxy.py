"""sdapi.node.nginx_proxy as a client sees it, against the A1111 stand-in behind it.

Every request goes from inside the container to its own loopback: through nginx on 443
to the stand-in on 127.0.0.1:7861, whose request log tells what reached the backend.
"""

import json

import pytest
from scenario_data import clients, secrets

from sdapi_testlib import http

BASE = "https://127.0.0.1"
ALICE, BOB, CAROL = (clients()[n] for n in ("alice", "bob", "carol"))
BACKEND_LOG = "/var/log/backend-standin.jsonl"


def bearer(client):
    return f"Authorization: Bearer {client['key']}"


def backend_requests(host):
    out = host.run(f"cat {BACKEND_LOG}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_valid_key_reaches_the_backend(host):
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/txt2img", "-X", "POST",
                                      "-H", bearer(ALICE), "-H", "Content-Type: application/json",
                                      "-d", '{"prompt": "a private prompt", "steps": 1}')
    assert status == 200, headers + body
    answer = json.loads(body)
    assert answer["images"] and answer["info"] == "{}"
    reached = backend_requests(host)[before:]
    assert [r["path"] for r in reached] == ["/sdapi/v1/txt2img"]


@pytest.mark.parametrize("auth", [[], ["-H", "Authorization: Bearer not-a-known-key-0123456789abc"],
                                  ["-H", "Authorization: Bearer"], ["-u", "alice:wrong-password-123"]],
                         ids=["no key", "unknown key", "empty bearer", "wrong basic password"])
def test_without_a_known_credential_401(host, auth):
    before = len(backend_requests(host))
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models", *auth)
    assert status == 401, headers + body
    assert "www-authenticate:" in headers.lower()
    assert json.loads(body)["error"] == "unauthorized"
    assert len(backend_requests(host)) == before, "a refused request reached the backend"


def test_basic_credentials_like_api_auth_clients(host):
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/sd-models",
                                      "-u", f"alice:{ALICE['basic_password']}")
    assert status == 200, headers + body
    assert json.loads(body)[0]["model_name"] == "standin"


def test_backend_never_sees_client_credentials(host):
    # The proxy sends its own backend credential (A1111 --api-auth), never the client's.
    seen = {r["authorization_value"] for r in backend_requests(host)}
    assert seen, "nothing reached the backend"
    leaked = [s for s in secrets()[:-2] if any(s in (v or "") for v in seen)]
    assert leaked == []


def test_public_route_needs_no_key(host):
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/progress")
    assert status == 200, headers + body


def test_http_redirects_to_https(host):
    # With the query string, when the route takes it (a query it does not take is 400 on
    # either port: test_adversarial_findings.py::test_query_key_absent_from_every_log).
    url = "/sdapi/v1/progress?skip_current_image=true"
    status, headers, _body = http.curl(host, f"http://127.0.0.1{url}")
    assert status == 301
    location = [h for h in headers.splitlines() if h.lower().startswith("location:")]
    assert location and location[0].split(":", 1)[1].strip() == f"https://127.0.0.1{url}"


@pytest.mark.parametrize("route,auth", [("sd-models", True), ("sd-models", False), ("cmd-flags", True)])
def test_security_headers_on_every_answer(host, route, auth):
    args = ["-H", bearer(BOB)] if auth else []
    _status, headers, _body = http.curl(host, f"{BASE}/sdapi/v1/{route}", *args)
    lowered = headers.lower()
    assert "strict-transport-security: max-age=63072000" in lowered
    assert "x-content-type-options: nosniff" in lowered
    assert "cache-control: no-store" in lowered
    assert "server: nginx\r" in lowered or "server: nginx\n" in lowered, "server_tokens must be off"


@pytest.mark.parametrize("flag,accepted", [("-tls1", False), ("-tls1_1", False),
                                           ("-tls1_2", True), ("-tls1_3", True)])
def test_tls_versions(host, flag, accepted):
    # SECLEVEL=0 lets the client offer TLS 1.0/1.1 at all, so a refusal is the server's.
    result = host.run("echo | timeout 10 openssl s_client -connect 127.0.0.1:443 %s "
                      "-cipher 'DEFAULT@SECLEVEL=0' -servername localhost", flag)
    if accepted:
        assert result.rc == 0, result.stderr
        assert "Verify return code" in result.stdout
    else:
        assert result.rc != 0
        assert "alert protocol version" in result.stderr, result.stderr


DENIED = [
    ("GET", "/sdapi/v1/cmd-flags"),
    ("POST", "/sdapi/v1/options"),
    ("POST", "/sdapi/v1/server-kill"),
    ("POST", "/sdapi/v1/server-restart"),
    ("POST", "/sdapi/v1/server-stop"),
    ("POST", "/sdapi/v1/create/embedding"),
    ("POST", "/sdapi/v1/create/hypernetwork"),
    ("POST", "/sdapi/v1/train/embedding"),
    ("POST", "/sdapi/v1/train/hypernetwork"),
    ("POST", "/sdapi/v1/refresh-checkpoints"),
    ("POST", "/sdapi/v1/refresh-vae"),
    ("POST", "/sdapi/v1/refresh-loras"),
    ("POST", "/sdapi/v1/refresh-embeddings"),
    ("POST", "/sdapi/v1/reload-checkpoint"),
    ("POST", "/sdapi/v1/unload-checkpoint"),
    ("GET", "/sdapi/v1/extensions"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/file=/etc/passwd"),
    ("GET", "/internal/ping"),
    ("GET", "/internal/sysinfo"),
    # Encodings and dot segments that must not sneak a denied route past the allowlist.
    ("GET", "/sdapi/v1/%63md-flags"),
    ("GET", "/sdapi/v1/txt2img/../cmd-flags"),
    ("GET", "/sdapi/v1//cmd-flags"),
    ("DELETE", "/sdapi/v1/txt2img"),
]


def test_denied_routes_403_even_with_a_valid_key(host):
    before = len(backend_requests(host))
    answers = {}
    for method, path in DENIED:
        status, _headers, body = http.curl(host, f"{BASE}{path}", "--path-as-is", "-X", method,
                                           "-H", bearer(BOB), "-d", "{}")
        answers[f"{method} {path}"] = status
        assert "LEAKED-CMD-FLAGS-SECRET" not in body
    assert answers == {k: 403 for k in answers}
    assert backend_requests(host)[before:] == [], "a denied route reached the backend"


@pytest.mark.parametrize("method,route", [("GET", "options"), ("GET", "samplers"), ("POST", "img2img")])
def test_allowed_routes_200(host, method, route):
    body_args = ["-d", "{}"] if method == "POST" else []
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/{route}", "-X", method,
                                      "-H", bearer(BOB), *body_args)
    assert status == 200, headers + body


def test_burst_on_txt2img_is_cut_at_rate_plus_burst(host):
    # carol: 6r/m with burst 4, so within the first 10 s exactly 1 + 4 requests pass.
    before = len(backend_requests(host))
    run = http.burst(host, f"{BASE}/sdapi/v1/txt2img", count=30, max_seconds=8,
                     headers={"Authorization": f"Bearer {CAROL['key']}"})
    statuses = [r["status"] for r in run["results"]]
    assert len(statuses) == 30, run
    assert set(statuses) <= {200, 429}, statuses
    refill = int(run["elapsed"] // 10)  # one more token every 10 s at 6r/m
    assert statuses.count(200) == 1 + CAROL["generation_burst"] + refill, statuses
    limited = [r for r in run["results"] if r["status"] == 429]
    assert limited and all(r["retry_after"] == "10" for r in limited), limited[:3]
    assert json.loads(limited[0]["body"])["retry_after"] == 10
    reached = [r for r in backend_requests(host)[before:] if r["path"] == "/sdapi/v1/txt2img"]
    assert len(reached) == statuses.count(200)
    # Another client's budget is its own.
    status, headers, body = http.curl(host, f"{BASE}/sdapi/v1/txt2img", "-X", "POST",
                                      "-H", bearer(BOB), "-d", "{}")
    assert status == 200, headers + body


def test_status_routes_are_generous(host):
    run = http.burst(host, f"{BASE}/sdapi/v1/sd-models", count=20, max_seconds=8, method="GET",
                     headers={"Authorization": f"Bearer {BOB['key']}"}, body="")
    assert [r["status"] for r in run["results"]] == [200] * 20


def test_access_log_is_json_without_secrets(host):
    lines = host.check_output("cat /var/log/nginx/sdapi-access.log").splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"alice", "bob", "carol"} <= {e["client"] for e in entries}
    sample = next(e for e in entries if e["client"] == "alice" and e["status"] == 200)
    assert {"route", "status", "request_time", "upstream_time"} <= set(sample)
    assert all("?" not in e["route"] for e in entries), "query strings must stay out of the log"
    logs = host.check_output("cat /var/log/nginx/*.log")
    assert [s for s in secrets() if s in logs] == []
    assert "a private prompt" not in logs


def test_access_log_is_for_admins_only(host):
    log = host.file("/var/log/nginx/sdapi-access.log")
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)


def test_nginx_is_restarted_when_it_dies(host):
    # The kill -9 itself is in the default scenario (test_site_faults.py).
    shown = host.check_output("systemctl show -p Restart -p RestartUSec -p DropInPaths nginx.service")
    assert "Restart=on-failure" in shown and "RestartUSec=2s" in shown, shown
    assert "/etc/systemd/system/nginx.service.d/sdapi-restart.conf" in shown, shown


def test_credentials_file_is_root_only(host):
    for path in ("/etc/nginx/sdapi.d/secrets.inc", "/etc/nginx/sdapi-staging/sdapi.d/secrets.inc"):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    assert host.file("/etc/nginx/sdapi-tls/server.key").mode == 0o600


def test_certificate_is_valid_for_the_server_names(host):
    out = host.check_output("openssl x509 -in /etc/nginx/sdapi-tls/server.crt -noout -ext subjectAltName -enddate")
    assert "DNS:localhost" in out
    assert host.service("nginx").is_enabled
