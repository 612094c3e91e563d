"""Wait until one sdapi-webui instance is ready, or say why it is not.

Ready means: the unit runs, its port answers, and (when a checkpoint is in place) the
journal of this start shows "Model loaded in". A unit that restarts or fails while we
wait is reported at once with its journal tail instead of waiting out the timeout.
Prints one JSON line. Credentials for the warm-up request come from SDAPI_READY_AUTH.
Usage: webui_ready.py INSTANCE HOST PORT TIMEOUT WARMUP(0|1) CKPT_DIR
"""

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

LOADED = re.compile(r"Model loaded in (\d+(?:\.\d+)?)s")


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


def request(url, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    auth = os.environ.get("SDAPI_READY_AUTH")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=600) as resp:
        return resp.status


def fail(unit, why):
    print(json.dumps({"ready": False, "reason": why, "journal": journal(unit, lines=40)}))
    sys.exit(1)


def main(instance, host, port, timeout, warmup, ckpt_dir):
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
            request(f"{base}/progress")
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
        print(json.dumps({"ready": True, "model": False, "load_seconds": None}))
        return
    if warmup == "1":
        request(f"{base}/txt2img", {"prompt": "warm-up", "steps": 1, "width": 64, "height": 64})
    invocation = unit_state(unit).get("InvocationID")
    while True:
        found = LOADED.search(journal(unit, invocation))
        if found:
            print(json.dumps({"ready": True, "model": True, "load_seconds": float(found.group(1))}))
            return
        state = unit_state(unit)
        if state.get("ActiveState") != "active":
            fail(unit, f"{unit} stopped before its model loaded")
        if time.monotonic() > deadline:
            fail(unit, f"{unit} answers but logged no 'Model loaded in' within {timeout}s "
                       "(a fork that loads lazily needs webui_warmup: true)")
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:7])
