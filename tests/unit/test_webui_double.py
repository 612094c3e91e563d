"""The webui test double keeps A1111's launch contract: the roles are tested against it.

Each test starts tests/webui_double/launch.py with the torch of .cache/double-venv (made
by scripts/setup-host.sh) on a free loopback port and a throwaway data dir.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = ROOT / "tests" / "webui_double"
PYTHON = ROOT / ".cache" / "double-venv" / "bin" / "python"
BASE_FLAGS = ["--api", "--nowebui", "--skip-prepare-environment", "--use-cpu", "all",
              "--skip-torch-cuda-test", "--api-log"]

if not PYTHON.exists():
    raise RuntimeError(f"{PYTHON} is missing: run `make setup` first")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_checkpoint(path: Path, scale: float = 1.0):
    code = ("import sys, torch; from safetensors.torch import save_file; "
            "g = torch.Generator().manual_seed(1); "
            "save_file({'w': torch.randn(32, 32, generator=g) * float(sys.argv[2]), "
            "'b': torch.ones(8) * float(sys.argv[2])}, sys.argv[1])")
    subprocess.run([str(PYTHON), "-c", code, str(path), str(scale)], check=True,
                   capture_output=True)


class Double:
    def __init__(self, tmp_path: Path, flags=(), env=None, checkpoint=True):
        self.data = tmp_path / "data"
        (self.data / "models" / "Stable-diffusion").mkdir(parents=True)
        if checkpoint:
            _make_checkpoint(self.data / "models" / "Stable-diffusion" / "tiny.safetensors")
        self.port = _free_port()
        self.log_path = tmp_path / "double.log"
        cmd = [str(PYTHON), "launch.py", *BASE_FLAGS, "--port", str(self.port),
               "--data-dir", str(self.data), *flags]
        self.proc = subprocess.Popen(cmd, cwd=DOUBLE, stdout=self.log_path.open("w"),
                                     stderr=subprocess.STDOUT,
                                     env=dict(os.environ, SDAPI_DOUBLE_STEP_SECONDS="0.05",
                                              **(env or {})))
        deadline = time.monotonic() + 30
        while "Uvicorn running" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text()

    def wait_for_log(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def call(self, method, route, body=None, auth=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/sdapi/v1/{route}",
                                     data=data, method=method,
                                     headers={"content-type": "application/json"})
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def double(tmp_path):
    started = []

    def start(*flags, env=None, checkpoint=True):
        d = Double(tmp_path, flags, env, checkpoint)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _run(*flags, python=PYTHON, env=None):
    return subprocess.run([str(python), "launch.py", *flags], cwd=DOUBLE, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, **(env or {})), check=False)


def test_unknown_flag_is_rejected_like_argparse():
    out = _run("--api", "--no-such-flag")
    assert out.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in out.stderr


def test_commandline_args_from_the_environment_are_parsed_too():
    out = _run("--exit", "--skip-prepare-environment", env={"COMMANDLINE_ARGS": "--bogus"})
    assert out.returncode == 2 and "--bogus" in out.stderr


def test_prepare_environment_fails_without_its_requirements_instead_of_going_online():
    out = _run("--exit", "--skip-torch-cuda-test", python=ROOT / ".venv" / "bin" / "python")
    assert out.returncode == 1
    assert "never reaches the network" in out.stdout


def test_prepare_environment_passes_with_requirements_and_exit_stops_there():
    out = _run("--exit", "--skip-torch-cuda-test")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Exiting because of --exit argument" in out.stdout


def test_cpu_needs_the_cpu_flag_like_a1111():
    out = _run("--api", "--nowebui", "--skip-prepare-environment")
    assert out.returncode == 1
    assert "Torch not compiled with CUDA enabled" in out.stdout


def test_loads_the_checkpoint_at_start_and_logs_like_a1111(double):
    d = double()
    d.wait_for_log("Model loaded in ")
    assert "Loading weights [" in d.log()
    status, models = d.call("GET", "sd-models")
    assert status == 200
    assert [m["model_name"] for m in models] == ["tiny"]
    assert models[0]["title"].startswith("tiny.safetensors [")


def test_txt2img_returns_a_png_of_the_requested_size_deterministic_per_seed(double):
    d = double()
    body = {"prompt": "a lighthouse", "seed": 7, "width": 128, "height": 96, "steps": 3}
    status, first = d.call("POST", "txt2img", body)
    assert status == 200, first
    image = base64.b64decode(first["images"][0])
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(image[16:20], "big") == 128 and int.from_bytes(image[20:24], "big") == 96
    assert json.loads(first["info"])["seed"] == 7
    _again_status, again = d.call("POST", "txt2img", body)
    _other_status, other = d.call("POST", "txt2img", dict(body, seed=8))
    assert again["images"] == first["images"]
    assert other["images"] != first["images"]
    assert "POST /sdapi/v1/txt2img" in d.log()


def test_api_auth_guards_every_route_and_cmd_flags_leaks_it_like_a1111(double):
    d = double("--api-auth", "alice:s3cret")
    assert d.call("GET", "progress")[0] == 401
    assert d.call("GET", "progress", auth="alice:wrong")[0] == 401
    status, flags = d.call("GET", "cmd-flags", auth="alice:s3cret")
    assert status == 200
    assert flags["api_auth"] == "alice:s3cret"


def test_jobs_run_one_at_a_time(double):
    d = double()
    d.wait_for_log("Model loaded in ")
    finished = []

    def job(seed):
        d.call("POST", "txt2img", {"seed": seed, "width": 64, "height": 64, "steps": 10})
        finished.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=job, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 10 steps of 0.05 s each: serialised jobs end at least 0.5 s apart.
    assert max(finished) - started >= 1.0
    assert abs(finished[0] - finished[1]) >= 0.45


def test_frozen_settings_refuse_changes(double):
    d = double("--freeze-settings")
    status, body = d.call("POST", "options", {"samples_save": False})
    assert status == 500 and "disabled" in body["errors"]


def test_pickle_checkpoints_are_never_loaded(double, tmp_path):
    d = double()
    d.wait_for_log("Model loaded in ")
    ckpt = d.data / "models" / "Stable-diffusion" / "legacy.ckpt"
    ckpt.write_bytes(b"not even a pickle")
    assert d.call("POST", "refresh-checkpoints", {})[0] == 200
    status, body = d.call("POST", "options", {"sd_model_checkpoint": "legacy"})
    assert status == 500 and "refusing to unpickle" in body["errors"]


def test_lazy_loading_waits_for_the_first_request(double):
    d = double(env={"SDAPI_DOUBLE_LAZY_LOAD": "1"})
    time.sleep(0.5)
    assert "Model loaded in" not in d.log()
    assert d.call("POST", "txt2img", {"width": 64, "height": 64, "steps": 1})[0] == 200
    assert "Model loaded in" in d.log()


def test_no_checkpoint_keeps_the_api_up_and_fails_generation_clearly(double):
    d = double(checkpoint=False)
    assert d.call("GET", "progress")[0] == 200
    status, body = d.call("POST", "txt2img", {"width": 64, "height": 64, "steps": 1})
    assert status == 500 and "No checkpoints found" in body["errors"]
