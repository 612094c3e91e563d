"""Wait until one sdapi-webui instance is ready, or say why it is not.

Ready means: the unit runs, its port answers, and (when a checkpoint is in place) the
journal of this start shows "Model loaded in". A unit that restarts or fails while we
wait is reported at once with its journal tail instead of waiting out the timeout.
Prints one JSON line. The credential for the warm-up request is read from the instances'
environment file (COMMANDLINE_ARGS), never passed on the command line or in the
environment, where `ps` and Ansible's -vvv output would show it.
Once ready, it asks the instance to re-read the model directories named in REFRESH (A1111
routes such as refresh-checkpoints, comma-separated, "-" for none): models added by this
run are then usable without a restart. A route the instance does not have (404) is skipped.
Usage: webui_ready.py INSTANCE HOST PORT TIMEOUT WARMUP(0|1) CKPT_DIR ENV_FILE REFRESH
"""

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

LOADED = re.compile(r"Model loaded in (\d+(?:\.\d+)?)s(?: \((.*)\))?")
PART = re.compile(r"\s*(.+?): (\d+(?:\.\d+)?)s\s*$")


def load_parts(detail):
    """A1111's breakdown of a load ("load weights from disk: 0.6s, apply float(): 9.4s"),
    slowest first, so a slow load can be blamed on what took the time."""
    parts = [PART.match(p) for p in (detail or "").split(",")]
    found = [(m.group(1), float(m.group(2))) for m in parts if m]
    return [{"part": name, "seconds": sec} for name, sec in sorted(found, key=lambda p: -p[1])]


def unit_state(unit):
    out = subprocess.run(["systemctl", "show", "-p", "ActiveState,NRestarts,InvocationID", unit],
                         capture_output=True, text=True, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(unit, invocation=None, lines=None):
    cmd = ["journalctl", "--no-pager", "-o", "cat"]
    cmd += [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["-u", unit]
    if lines:
        cmd += ["-n", str(lines)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def api_auth(env_file):
    """The first user:password of --api-auth in the file's COMMANDLINE_ARGS, or None."""
    try:
        with open(env_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if name.strip() != "COMMANDLINE_ARGS" or not sep:
            continue
        # systemd strips the quotes around the value; A1111 then splits what is left.
        args = shlex.split(" ".join(shlex.split(value)))
        for index, arg in enumerate(args):
            if arg == "--api-auth" and index + 1 < len(args):
                return args[index + 1].split(",")[0]
            if arg.startswith("--api-auth="):
                return arg.partition("=")[2].split(",")[0]
    return None


def request(url, auth, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=600) as resp:
        return resp.status


def fail(unit, why):
    print(json.dumps({"ready": False, "reason": why, "journal": journal(unit, lines=40)}))
    sys.exit(1)


def refresh(base, auth, routes):
    """POST each refresh route; returns the ones the instance has."""
    done = []
    for route in filter(None, routes.split(",")):
        if route == "-":
            continue
        try:
            request(f"{base}/{route}", auth, {})
            done.append(route)
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
    return done


def main(instance, host, port, timeout, warmup, ckpt_dir, env_file, routes):
    auth = api_auth(env_file)
    unit = f"sdapi-webui@{instance}.service"
    deadline = time.monotonic() + float(timeout)
    first = unit_state(unit)
    base = f"http://{host}:{port}/sdapi/v1"
    while True:
        state = unit_state(unit)
        if state.get("ActiveState") == "failed" or state.get("NRestarts") != first.get("NRestarts"):
            fail(unit, f"{unit} crashed while starting (state {state.get('ActiveState')}, "
                       f"restarts {state.get('NRestarts')})")
        try:
            request(f"{base}/progress", auth)
            break
        except urllib.error.HTTPError as err:
            if err.code == 401:
                break  # up, and guarded by --api-auth
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail(unit, f"{unit} did not answer on {host}:{port} within {timeout}s")
        time.sleep(1)
    has_model = os.path.isdir(ckpt_dir) and any(n.endswith(".safetensors") for n in os.listdir(ckpt_dir))
    if not has_model:
        print(json.dumps({"ready": True, "model": False, "load_seconds": None,
                          "refreshed": refresh(base, auth, routes)}))
        return
    if warmup == "1":
        request(f"{base}/txt2img", auth, {"prompt": "warm-up", "steps": 1, "width": 64, "height": 64})
    invocation = unit_state(unit).get("InvocationID")
    while True:
        found = LOADED.search(journal(unit, invocation))
        if found:
            print(json.dumps({"ready": True, "model": True, "load_seconds": float(found.group(1)),
                              "load_parts": load_parts(found.group(2)),
                              "refreshed": refresh(base, auth, routes)}))
            return
        state = unit_state(unit)
        if state.get("ActiveState") != "active":
            fail(unit, f"{unit} stopped before its model loaded")
        if time.monotonic() > deadline:
            fail(unit, f"{unit} answers but logged no 'Model loaded in' within {timeout}s "
                       "(a fork that loads lazily needs webui_warmup: true)")
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:9])
