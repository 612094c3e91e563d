"""Helpers of the whole-site proofs (molecule/default/tests/test_site_*.py), test-only.

The default scenario is one node that is GPU host and proxy at once. These helpers read
what the scenario's inventory says (keys, backend credentials, instances), drive the
node the way a client or an operator would (through the proxy on the node's loopback, the
webui ports with the backend credentials, the site playbook), and report figures past
pytest's output capture so that they land in the verifier's log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from sdapi_testlib import http, molecule_env

# The proxy as seen from inside the node; the published port serves the controller.
PROXY = "https://127.0.0.1"
API = f"{PROXY}/sdapi/v1"
# Small and fast on the double (a few 10 ms), yet a real generation through the queue.
TXT2IMG = {"prompt": "whole-site proof", "steps": 2, "width": 64, "height": 64, "seed": 7}
MODEL_DIR = "/var/lib/sdapi/models/Stable-diffusion"
ROOT = Path(__file__).resolve().parents[3]

# A1111's /sdapi/v1 surface (modules/api/api.py of v1.10, with --api-server-stop): every
# route a backend may have, whether or not the proxy lets it through.
A1111_ROUTES = {
    "GET": ["progress", "options", "cmd-flags", "samplers", "schedulers", "upscalers",
            "latent-upscale-modes", "sd-models", "sd-vae", "hypernetworks", "face-restorers",
            "realesrgan-models", "prompt-styles", "embeddings", "memory", "scripts", "script-info",
            "extensions", "loras"],
    "POST": ["txt2img", "img2img", "extra-single-image", "extra-batch-images", "png-info",
             "interrogate", "interrupt", "skip", "options", "refresh-embeddings",
             "refresh-checkpoints", "refresh-vae", "refresh-loras", "create/embedding",
             "create/hypernetwork", "train/embedding", "train/hypernetwork", "unload-checkpoint",
             "reload-checkpoint", "server-kill", "server-restart", "server-stop"],
}
# Outside /sdapi/v1 (Gradio and FastAPI pages), and spellings that must not sneak a denied
# route past an allowlist that matches exact locations.
OTHER_DENIED = [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/redoc"),
                ("GET", "/file=/etc/passwd"), ("GET", "/internal/ping"), ("GET", "/"),
                ("GET", "/sdapi/v1/"), ("GET", "/sdapi/v1/%63md-flags"),
                ("GET", "/sdapi/v1/sd-models/../cmd-flags"), ("GET", "/sdapi/v1//cmd-flags"),
                ("DELETE", "/sdapi/v1/txt2img"), ("PUT", "/sdapi/v1/sd-models")]


# --- what the scenario says ---------------------------------------------------------------
def node():
    """The scenario's one node (GPU host and proxy)."""
    return molecule_env.host(molecule_env.group_hosts("sdapi_nodes")[0])


def _inventory_dir() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"


def inventory_vars() -> dict:
    """group_vars of sdapi_nodes as Molecule wrote them for this run."""
    return yaml.safe_load((_inventory_dir() / "group_vars" / "sdapi_nodes").read_text()) or {}


def https_url() -> str:
    """Where the controller reaches the node's HTTPS port (a published port)."""
    name = molecule_env.group_hosts("sdapi_nodes")[0]
    return yaml.safe_load((_inventory_dir() / "host_vars" / name).read_text())["site_test_https_url"]


def node_certificate(n, path: Path) -> Path:
    """The node's TLS certificate (self-signed here) saved on the controller, for clients to trust."""
    path.write_text(n.file("/etc/nginx/sdapi-tls/server.crt").content_string)
    return path


def clients() -> dict[str, str]:
    """API client name -> key."""
    return {c["name"]: c["key"] for c in inventory_vars().get("nginx_proxy_clients", []) if c.get("key")}


def backend_credential() -> str:
    """user:password the proxy sends to the webui instances (empty: none)."""
    return inventory_vars().get("nginx_proxy_backend_basic_auth", "")


def secrets() -> dict[str, str]:
    """Every credential of the inventory, named, with the Basic header form of each pair."""
    found = {f"key of {name}": key for name, key in clients().items()}
    pairs = [backend_credential()] if backend_credential() else []
    pairs += [f"{a['user']}:{a['password']}" for a in inventory_vars().get("webui_api_auth", [])]
    for pair in dict.fromkeys(pairs):
        user, password = pair.split(":", 1)
        found[f"backend password of {user}"] = password
        found[f"Basic header of {user}"] = base64.b64encode(pair.encode()).decode()
    return found


def role_default(role: str, name: str):
    """A variable as this run has it: the inventory's value, else the role's default."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    return inventory_vars().get(name, defaults[name])


def published_sha256(model: str) -> str:
    """The checksum molecule/shared/publish-double.yml recorded for a double checkpoint."""
    stem = model.removesuffix(".safetensors")
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / f"{stem}-model.sha256").read_text().strip()


# --- reporting ----------------------------------------------------------------------------
def report(config, line: str) -> None:
    """Print past pytest's capture: Molecule's verifier captures, figures must still show."""
    with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n[site] {line}", flush=True)


_SPENT: dict[str, float] = {}


def module_timer():
    """An autouse fixture for a whole-site module (`site_timer = site.module_timer()`): times
    the module and prints the running total of every whole-site module of the session."""
    @pytest.fixture(scope="module", autouse=True, name="site_timer")
    def timer(request):
        started = time.monotonic()
        yield
        name = request.module.__name__
        _SPENT[name] = time.monotonic() - started
        report(request.config, f"{name}: {_SPENT[name]:.1f} s; whole-site proofs so far: "
                               f"{sum(_SPENT.values()):.1f} s in {len(_SPENT)} modules")
    return timer


def wait_for(check, timeout: float, what: str, interval: float = 0.5) -> float:
    """Seconds until check() is true; AssertionError naming `what` after timeout."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


# --- the node as a client and an operator see it --------------------------------------------
def proxy(n, route: str, key: str | None, method: str = "GET", body: dict | None = None):
    """One request through nginx on the node's loopback; (status, parsed JSON or text)."""
    args = ["-X", method]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status, _headers, text = http.curl(n, f"{API}/{route}", *args)
    return status, _json(text)


def backend(n, port: int, route: str, method: str = "GET", body: dict | None = None):
    """One request straight to a webui instance, with the backend credentials."""
    args = ["-X", method]
    if backend_credential():
        args += ["-u", backend_credential()]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status, _headers, text = http.curl(n, f"http://127.0.0.1:{port}/sdapi/v1/{route}", *args)
    return status, _json(text)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def model_of(answer) -> str | None:
    """Which checkpoint made a txt2img answer (A1111's info.sd_model_name)."""
    try:
        return json.loads(answer["info"])["sd_model_name"]
    except (TypeError, KeyError, ValueError):
        return None


def instances(n) -> dict[int, int]:
    """Configured webui instance -> its port, from the per-instance environment files."""
    out = n.check_output("grep -H '^SDAPI_PORT=' /etc/sdapi/webui-*.env")
    found = re.findall(r"webui-(\d+)\.env:SDAPI_PORT=(\d+)", out)
    return {int(i): int(port) for i, port in found}


def unit_state(n, unit: str) -> dict[str, str]:
    out = n.check_output(f"systemctl show -p ActiveState,SubState,Result,NRestarts,InvocationID,MainPID {unit}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def instance_ready(n, instance: int, port: int) -> bool:
    """Active, its current start logged the model load, and its port answers."""
    state = unit_state(n, f"sdapi-webui@{instance}.service")
    if state.get("ActiveState") != "active" or not state.get("InvocationID"):
        return False
    log = n.run(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={state['InvocationID']}").stdout
    return "Model loaded in" in log and backend(n, port, "progress")[0] == 200


def all_ready(n) -> bool:
    return all(instance_ready(n, i, port) for i, port in instances(n).items())


# nginx error-log lines of a failed attempt on an instance: each marks the instance down in
# the worker that made it (the pid before '#').
UPSTREAM_FAILURE = r"(connect\(\) failed|upstream prematurely closed|upstream timed out).* while .*upstream"


def upstream_failure_workers(n, since_line: int = 0) -> set[str]:
    """pids of the nginx workers that logged an upstream failure after the given line."""
    out = n.run(f"tail -n +{since_line + 1} /var/log/nginx/error.log | grep -E '{UPSTREAM_FAILURE}'").stdout
    return {line.split("]", 1)[1].split("#", 1)[0].strip() for line in out.splitlines()}


def settle_proxy(n) -> None:
    """Reloads nginx and waits for the old workers to go: fresh workers hold no instance
    marked down from an earlier outage. Once marked, a worker answers 502 until a request
    of its own gets through (test_site_faults::test_proxy_serves_as_soon_as_the_instances_are_back);
    tests that measure steady state start from here."""
    old = set(n.check_output("pgrep -f '^nginx: worker'").split())
    n.check_output("systemctl reload nginx.service")
    wait_for(lambda: not old & set(n.run("pgrep -f '^nginx: worker'").stdout.split()), 30, "old nginx workers gone")


def data_checksums(n) -> str:
    """sha256 of every file under the models and outputs of the data dir."""
    return n.check_output("cd /var/lib/sdapi && find models outputs -type f -exec sha256sum {} + | sort")


def exposure(n, unit: str) -> tuple[float, str]:
    """systemd-analyze security's overall exposure of a unit (0 safe .. 10 exposed)."""
    last = n.check_output(f"systemd-analyze security --no-pager {unit} | tail -1")
    found = re.search(r"exposure level for \S+: ([0-9.]+) (\w+)", last)
    assert found, last
    return float(found.group(1)), found.group(2)


def tls_handshake(n, flag: str) -> tuple[bool, str]:
    """A handshake with the proxy offering one TLS version; (accepted, protocol or error)."""
    # SECLEVEL=0 lets OpenSSL 3 offer TLS 1.0/1.1 at all, so a refusal is the server's.
    result = n.run("echo | timeout 10 openssl s_client -connect 127.0.0.1:443 -servername localhost "
                   "%s -cipher 'DEFAULT@SECLEVEL=0'", flag)
    if result.rc == 0:
        protocol = re.search(r"Protocol\s*:\s*(\S+)", result.stdout) or re.search(r"New, (TLSv[\d.]+)", result.stdout)
        return True, protocol.group(1) if protocol else "?"
    alert = re.search(r"alert [a-z ]+", result.stderr)
    return False, alert.group(0) if alert else result.stderr.strip()[-200:]


# --- the site playbook ------------------------------------------------------------------------
TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(.+?)\] \*+\s*$")
CHANGED = re.compile(r"^changed: \[([^\]]+)\]")


def run_site(*args: str, extra_vars: dict | None = None):
    """The scenario's converge (the whole site); (rc, output, recap, seconds)."""
    started = time.monotonic()
    rc, output, recap = molecule_env.ansible_playbook(molecule_env.converge_playbook(), *args,
                                                      extra_vars=extra_vars)
    return rc, output, recap, time.monotonic() - started


def changed_tasks(output: str, host: str) -> list[str]:
    """Names of the tasks and handlers that reported a change on the host, in run order."""
    names, task = [], None
    for line in output.splitlines():
        header = TASK.match(line)
        if header:
            task = header.group(1)
            continue
        hit = CHANGED.match(line)
        if hit and hit.group(1) == host and task and task not in names:
            names.append(task)
    return names


# --- many requests from inside the node ---------------------------------------------------------
# argv: a JSON plan {"max_seconds": s, "workers": n, "lanes": {name: [[method, path,
# headers, body], ...]}}. Each lane (one API client) runs its requests on its own pool of
# `workers` threads, all lanes at once, each request on a fresh TLS connection; nothing is
# sent after max_seconds. Prints {"elapsed": s, "results": [{lane, method, path, status}],
# "unsent": n}; status 0 is a connection that failed (its error in "error").
_RUNNER = r"""
import http.client, json, ssl, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
plan = json.loads(sys.argv[1])
ctx = ssl._create_unverified_context()
start, lock, results, unsent = time.monotonic(), threading.Lock(), [], [0]
def one(lane, method, path, headers, body):
    if time.monotonic() - start > plan["max_seconds"]:
        with lock:
            unsent[0] += 1
        return
    row = {"lane": lane, "method": method, "path": path}
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=30)
        conn.request(method, path, body=body.encode() if body else None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        row["status"] = resp.status
        conn.close()
    except Exception as exc:
        row.update(status=0, error=repr(exc))
    with lock:
        results.append(row)
pools = [ThreadPoolExecutor(plan["workers"]) for _ in plan["lanes"]]
for pool, (lane, requests) in zip(pools, plan["lanes"].items()):
    for method, path, headers, body in requests:
        pool.submit(one, lane, method, path, headers, body)
for pool in pools:
    pool.shutdown(wait=True)
print(json.dumps({"elapsed": time.monotonic() - start, "results": results, "unsent": unsent[0]}))
"""


def request(method: str, path: str, key: str | None = None, body: dict | None = None) -> list:
    """One entry of a runner plan."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return [method, path, headers, json.dumps(body) if body is not None else ""]


def run_requests(n, lanes: dict[str, list], workers: int = 1, max_seconds: float = 60) -> dict:
    """Run a plan inside the node (see _RUNNER); the parsed result."""
    plan = json.dumps({"max_seconds": max_seconds, "workers": workers, "lanes": lanes})
    out = n.check_output("timeout %s python3 -c %s %s", str(int(max_seconds) + 45), _RUNNER, plan)
    return json.loads(out)


def access_log_between(n, begin: str, end: str) -> list[dict]:
    """JSON access-log entries strictly between the entries of two marker routes."""
    entries = [json.loads(line) for line in n.check_output("cat /var/log/nginx/sdapi-access.log").splitlines()
               if line.strip()]
    routes = [e["route"] for e in entries]
    return entries[routes.index(begin) + 1:routes.index(end)]


# --- route policy -----------------------------------------------------------------------------
def allowed_routes() -> set[tuple[str, str]]:
    """(method, path) the proxy lets through: its route list plus the extra routes."""
    routes = role_default("nginx_proxy", "nginx_proxy_routes") + role_default("nginx_proxy", "nginx_proxy_extra_routes")
    return {(m, r["path"]) for r in routes for m in r["methods"]}


def dangerous_routes() -> set[tuple[str, str]]:
    """A1111 routes the role's own pattern calls dangerous (never to be reachable by accident)."""
    pattern = yaml.safe_load((ROOT / "roles" / "nginx_proxy" / "vars" / "main.yml").read_text())[
        "__nginx_proxy_dangerous_path"].strip()
    return {(m, r) for m, routes in A1111_ROUTES.items() for r in routes if re.match(pattern, r)}


def denied_requests() -> list[tuple[str, str]]:
    """Every A1111 route and method the allowlist leaves out, an allowed route under a method
    it does not allow, and the paths outside the API."""
    allowed = allowed_routes()
    denied = [(m, f"/sdapi/v1/{r}") for m, routes in A1111_ROUTES.items() for r in routes if (m, r) not in allowed]
    other = {"GET": "POST", "POST": "GET"}
    denied += sorted({(other[m], f"/sdapi/v1/{r}") for m, r in allowed if (other[m], r) not in allowed})
    return list(dict.fromkeys(denied + OTHER_DENIED))
