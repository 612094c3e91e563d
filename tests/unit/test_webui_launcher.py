"""The webui role's launcher and readiness probe keep the backend credential out of sight.

sdapi_launch.py runs a release's launch.py in its own process with credentials masked in
what the process prints; webui_ready.py reads its credential from the environment file.
Both run here against a stand-in launch.py written into a temp directory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "roles" / "webui" / "files"
sys.path.insert(0, str(FILES))

import webui_ready  # noqa: E402  pylint: disable=wrong-import-position,import-error

PASSWORD = "Lamp-Harbour-4471"
SHORT = "zq9"

# Prints what A1111's launch.py prints at start, from a module next to it (the import path
# must be the release's), on both streams, then exits with a code the launcher must keep.
STAND_IN = textwrap.dedent('''\
    import os, shlex, sys
    from helper import arguments
    print(f"Launching API server with arguments: {arguments()}", flush=True)
    print(f"stderr too: {shlex.join(sys.argv[1:])}", file=sys.stderr, flush=True)
    print(f"name={__name__} cwd={os.getcwd()} argv0={sys.argv[0]}")
    sys.exit(3)
''')
HELPER = textwrap.dedent('''\
    import os, shlex, sys
    def arguments():
        return shlex.join(sys.argv[1:] + shlex.split(os.environ.get("COMMANDLINE_ARGS", "")))
''')


@pytest.fixture()
def release(tmp_path):
    (tmp_path / "launch.py").write_text(STAND_IN)
    (tmp_path / "helper.py").write_text(HELPER)
    return tmp_path


def _launch(release: Path, args: list[str], commandline_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FILES / "sdapi_launch.py"), *args], cwd=release,
                          env={"COMMANDLINE_ARGS": commandline_args, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)


def test_launcher_masks_api_auth_from_commandline_args(release):
    run = _launch(release, ["--api", "--port", "7861"], f"--api-auth proxy:{PASSWORD},ops:{SHORT}")
    out = run.stdout + run.stderr
    assert PASSWORD not in out and f"ops:{SHORT}" not in out, out
    assert "Launching API server with arguments: --api --port 7861 --api-auth ********" in run.stdout
    # launch.py ran as the main module, from the release, with its exit code kept.
    assert f"name=__main__ cwd={release} argv0={release}/launch.py" in run.stdout
    assert run.returncode == 3


def test_launcher_masks_credentials_given_as_arguments(release):
    run = _launch(release, [f"--gradio-auth=admin:{PASSWORD}", "--api-auth", f"proxy:{PASSWORD}x"], "")
    out = run.stdout + run.stderr
    assert PASSWORD not in out, out
    assert "--gradio-auth=********" in out


def test_launcher_leaves_output_without_credentials_alone(release):
    run = _launch(release, ["--api"], "--skip-version-check")
    assert "Launching API server with arguments: --api --skip-version-check\n" in run.stdout
    assert "stderr too: --api" in run.stderr


def test_short_password_is_masked_only_inside_its_pair():
    from sdapi_launch import secrets_in  # pylint: disable=import-error,import-outside-toplevel

    found = secrets_in(["--api-auth", f"a:{SHORT},b:{PASSWORD}"])
    assert SHORT not in found and f"a:{SHORT}" in found and PASSWORD in found
    assert found == sorted(found, key=len, reverse=True)


@pytest.mark.parametrize("line,expected", [
    (f'COMMANDLINE_ARGS="--api-auth proxy:{PASSWORD},ops:x"', f"proxy:{PASSWORD}"),
    (f'COMMANDLINE_ARGS="--xformers --api-auth=proxy:{PASSWORD}"', f"proxy:{PASSWORD}"),
    ('COMMANDLINE_ARGS="--xformers"', None),
    (f'OTHER="--api-auth proxy:{PASSWORD}"', None),
])
def test_probe_reads_its_credential_from_the_environment_file(tmp_path, line, expected):
    env = tmp_path / "webui.env"
    env.write_text(f"# comment\n{line}\nHF_HOME=/var/cache/sdapi/huggingface\n")
    assert webui_ready.api_auth(str(env)) == expected


def test_probe_without_an_environment_file_sends_no_credential(tmp_path):
    assert webui_ready.api_auth(str(tmp_path / "missing.env")) is None


def test_the_probe_reads_a1111s_load_breakdown_slowest_first():
    # A1111 v1.10.1 on a CPU node (fp16 weights made fp32 with --no-half).
    detail = ("load weights from disk: 1.2s, create model: 0.9s, apply weights to model: 4.2s, "
              "apply float(): 9.4s, calculate empty prompt: 0.5s")
    parts = webui_ready.load_parts(detail)
    assert [p["part"] for p in parts[:2]] == ["apply float()", "apply weights to model"]
    assert parts[0]["seconds"] == 9.4 and len(parts) == 5
    assert webui_ready.load_parts(None) == [] and webui_ready.load_parts("no timings") == []


def test_the_probe_finds_the_load_line_with_and_without_a_breakdown():
    line = "Model loaded in 10.0s (load weights from disk: 1.2s, apply float(): 2.9s)."
    found = webui_ready.LOADED.search(line)
    assert found.group(1) == "10.0" and "apply float()" in found.group(2)
    assert webui_ready.LOADED.search("Model loaded in 3.5s").group(2) is None
