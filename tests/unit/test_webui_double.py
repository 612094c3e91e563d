"""The webui test double keeps A1111's launch contract: the roles are tested against it.

Each test starts launch.py from a copy of tests/webui_double (A1111 writes into its checkout)
with the torch of .cache/double-venv (made by scripts/setup-host.sh) on a free loopback port,
a throwaway data dir and a hub cache that holds the CLIP files A1111 reads at model creation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
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
# The five files of openai/clip-vit-large-patch14 that A1111 v1.10.1 reads from the hub.
CLIP_FIXTURE = (ROOT.parent / "shared" / "fixtures" / "a1111-v1.10.1" / "hf"
                / "openai--clip-vit-large-patch14")
CLIP_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
              "config.json")
CLIP_REVISION = hashlib.sha1(b"sdapi.node test revision").hexdigest()
TOKENIZER_ERROR = ("OSError: Can't load tokenizer for 'openai/clip-vit-large-patch14'. If you were "
                   "trying to load it from 'https://huggingface.co/models', make sure you don't "
                   "have a local directory with the same name. Otherwise, make sure "
                   "'openai/clip-vit-large-patch14' is the correct path to a directory containing "
                   "all relevant files for a CLIPTokenizer tokenizer.")
# Inherited settings that would change what the double reads or how it prints.
SCRUBBED_ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONUNBUFFERED", "COMMANDLINE_ARGS",
                "SDAPI_DOUBLE_LAZY_LOAD")

if not PYTHON.exists():
    raise RuntimeError(f"{PYTHON} is missing: run `make setup` first")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CHECKPOINTS: dict[float, bytes] = {}


def _make_checkpoint(path: Path, scale: float = 1.0):
    """A tiny .safetensors file, made with the venv's torch once per scale and session."""
    if scale not in _CHECKPOINTS:
        code = ("import sys, torch; from safetensors.torch import save_file; "
                "g = torch.Generator().manual_seed(1); "
                "save_file({'w': torch.randn(32, 32, generator=g) * float(sys.argv[2]), "
                "'b': torch.ones(8) * float(sys.argv[2])}, sys.argv[1])")
        subprocess.run([str(PYTHON), "-c", code, str(path), str(scale)], check=True,
                       capture_output=True)
        _CHECKPOINTS[scale] = path.read_bytes()
    else:
        path.write_bytes(_CHECKPOINTS[scale])


def _checkout(dest: Path) -> Path:
    """A copy of the double to run from: it makes config_states in its checkout, like A1111."""
    shutil.copytree(DOUBLE, dest, ignore=shutil.ignore_patterns("__pycache__", "config_states"))
    return dest


def _clip_sources(workdir: Path) -> Path:
    """The shared fixture's five files, or small stand-ins where the fixture is not mounted."""
    if all((CLIP_FIXTURE / name).is_file() for name in CLIP_FILES):
        return CLIP_FIXTURE
    workdir.mkdir(parents=True, exist_ok=True)
    tokens = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    (workdir / "vocab.json").write_text(json.dumps(tokens))
    (workdir / "merges.txt").write_text("#version: 0.2\ni n\n")
    (workdir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    (workdir / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    (workdir / "config.json").write_text(json.dumps({"model_type": "clip"}))
    return workdir


def _hub_cache(hub: Path, sources: Path, skip=(), replace=None) -> Path:
    """huggingface_hub's layout: refs/main names the revision, snapshots/<revision>/ links the files."""
    repo = hub / "models--openai--clip-vit-large-patch14"
    snapshot = repo / "snapshots" / CLIP_REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(CLIP_REVISION)
    for name in CLIP_FILES:
        if name in (replace or {}):
            (snapshot / name).write_text(replace[name])
        elif name not in skip:
            (snapshot / name).symlink_to(sources / name)
    return hub


@pytest.fixture(scope="session")
def clip_sources(tmp_path_factory):
    return _clip_sources(tmp_path_factory.mktemp("clip-files"))


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory, clip_sources):
    home = tmp_path_factory.mktemp("hf-home")
    _hub_cache(home / "hub", clip_sources)
    return home


def _env(hf_home, extra=None):
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(SDAPI_DOUBLE_STEP_SECONDS="0.05", HF_HOME=str(hf_home), PYTHONUNBUFFERED="1")
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _readonly(checkout: Path, cmd):
    """cmd, run with the checkout bind-mounted read-only on itself in a mount namespace of its own."""
    userns = [] if os.geteuid() == 0 else ["-r"]
    script = 'mount --bind -o ro "$1" "$1" && cd "$1" && shift && exec "$@"'
    return ["unshare", *userns, "-m", "sh", "-c", script, "sh", str(checkout), *cmd]


def _require_readonly_mounts(tmp_path: Path):
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    try:
        out = subprocess.run(_readonly(probe, ["sh", "-c", f"! touch {probe}/x"]),
                             capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if out.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {out.stderr.strip()}")


class Double:
    def __init__(self, tmp_path: Path, flags=(), env=None, checkpoint=True, hf_home=None,
                 checkout=None, readonly=False):
        self.data = tmp_path / "data"
        (self.data / "models" / "Stable-diffusion").mkdir(parents=True)
        if checkpoint:
            _make_checkpoint(self.data / "models" / "Stable-diffusion" / "tiny.safetensors")
        self.checkout = checkout or _checkout(tmp_path / "webui")
        self.port = _free_port()
        self.log_path = tmp_path / "double.log"
        cmd = [str(PYTHON), "launch.py", *BASE_FLAGS, "--port", str(self.port),
               "--data-dir", str(self.data), *flags]
        if readonly:
            cmd = _readonly(self.checkout, cmd)
        self.proc = subprocess.Popen(cmd, cwd=self.checkout, stdout=self.log_path.open("w"),
                                     stderr=subprocess.STDOUT, env=_env(hf_home, env))
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
        return _call(self.port, method, route, body, auth)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def _call(port, method, route, body=None, auth=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sdapi/v1/{route}",
                                 data=data, method=method,
                                 headers={"content-type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def double(tmp_path, hf_home):
    started = []

    def start(*flags, env=None, checkpoint=True, **kwargs):
        kwargs.setdefault("hf_home", hf_home)
        d = Double(tmp_path, flags, env, checkpoint, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _run(*flags, python=PYTHON, env=None):
    with tempfile.TemporaryDirectory() as tmp:
        checkout = _checkout(Path(tmp) / "webui")
        return subprocess.run([str(python), "launch.py", *flags], cwd=checkout,
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, **(env or {})), check=False)


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


# --- config_states: A1111 makes <checkout>/config_states at start -------------------------
def test_a_read_only_checkout_dies_where_a1111_makes_config_states(tmp_path, hf_home):
    _require_readonly_mounts(tmp_path)
    checkout = _checkout(tmp_path / "webui")
    data = tmp_path / "data"
    data.mkdir()
    cmd = [str(PYTHON), "launch.py", *BASE_FLAGS, "--port", str(_free_port()), "--data-dir", str(data)]
    out = subprocess.run(_readonly(checkout, cmd), cwd=checkout, capture_output=True, text=True,
                         timeout=60, env=_env(hf_home), check=False)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert "OSError: [Errno 30] Read-only file system" in out.stderr
    assert "config_states" in out.stderr
    assert "Uvicorn running" not in out.stdout
    assert not (checkout / "config_states").exists()


def test_a_config_states_symlink_to_a_writable_dir_lets_a_read_only_checkout_start(double, tmp_path):
    _require_readonly_mounts(tmp_path)
    checkout = _checkout(tmp_path / "webui")
    (tmp_path / "states").mkdir()
    (checkout / "config_states").symlink_to(tmp_path / "states")
    d = double(checkout=checkout, readonly=True)
    assert d.call("GET", "progress")[0] == 200
    d.wait_for_log("Model loaded in ")


# --- stdout: plain print(), block-buffered on a pipe ---------------------------------------
class _PipeReader:
    def __init__(self, stream):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in iter(stream.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def text(self):
        return "".join(self.lines)


def _start_on_a_pipe(tmp_path, hf_home, env):
    """The double with stdout on a pipe, as under systemd; no --api-log, so that polling the
    API adds nothing to the buffer."""
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    _make_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors")
    checkout = _checkout(tmp_path / "webui")
    port = _free_port()
    flags = [f for f in BASE_FLAGS if f != "--api-log"]
    proc = subprocess.Popen([str(PYTHON), "launch.py", *flags, "--port", str(port),
                             "--data-dir", str(data)], cwd=checkout, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env(hf_home, env))
    return proc, port, _PipeReader(proc.stdout)


def _wait_until_the_api_reports_the_model(proc, port, reader, timeout=30):
    """Loaded, by the API's word (options name the checkpoint), not by the log's."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, options = _call(port, "GET", "options")
            if status == 200 and options.get("sd_model_checkpoint"):
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, reader.text()
        assert time.monotonic() < deadline, reader.text()
        time.sleep(0.2)


def test_stdout_is_block_buffered_on_a_pipe_without_pythonunbuffered(tmp_path, hf_home):
    proc, port, reader = _start_on_a_pipe(tmp_path, hf_home, {"PYTHONUNBUFFERED": None})
    try:
        _wait_until_the_api_reports_the_model(proc, port, reader)
        time.sleep(0.5)
        assert "Model loaded in" not in reader.text()
        # Still in Python's buffer: it reaches the pipe when the process exits and flushes.
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.thread.join(timeout=10)
        assert "Model loaded in " in reader.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stdout_reaches_a_pipe_promptly_with_pythonunbuffered(tmp_path, hf_home):
    proc, port, reader = _start_on_a_pipe(tmp_path, hf_home, {"PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while "Model loaded in " not in reader.text():
            assert proc.poll() is None, reader.text()
            assert time.monotonic() < deadline, reader.text()
            time.sleep(0.05)
        assert "Uvicorn running" in reader.text()
    finally:
        proc.kill()
        proc.wait()


# --- the CLIP tokenizer and text config from the Hugging Face hub cache -------------------
def test_the_clip_files_in_the_hub_cache_let_the_model_load(double, tmp_path, clip_sources):
    # HF_HUB_CACHE wins over HF_HOME, which points at an empty home here.
    hub = _hub_cache(tmp_path / "hub-cache", clip_sources)
    d = double(env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"},
               hf_home=tmp_path / "empty-hf-home")
    d.wait_for_log("Model loaded in ")
    assert "Can't load tokenizer" not in d.log()
    assert d.call("POST", "txt2img", {"width": 64, "height": 64, "steps": 1})[0] == 200


@pytest.mark.parametrize("skip, replace, env", [
    (("vocab.json",), None, {"HF_HUB_OFFLINE": "1"}),
    ((), {"tokenizer_config.json": '{"tokenizer_class": "CLIPTok'}, {}),
], ids=["vocab-missing-offline", "tokenizer-config-truncated-online"])
def test_a_missing_or_broken_clip_file_fails_the_model_like_a1111(
        double, tmp_path, clip_sources, skip, replace, env):
    home = tmp_path / "hf-home"
    _hub_cache(home / "hub", clip_sources, skip=skip, replace=replace)
    d = double(env=env, hf_home=home)
    d.wait_for_log("Stable diffusion model failed to load")
    log = d.log()
    assert TOKENIZER_ERROR in log
    assert "Loading weights [" in log
    assert "Model loaded in" not in log
    assert d.call("GET", "progress")[0] == 200
    status, body = d.call("POST", "txt2img", {"width": 64, "height": 64, "steps": 1})
    assert status == 500 and "Can't load tokenizer" in body["errors"]
    assert "Model loaded in" not in d.log()
