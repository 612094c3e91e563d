"""sdapi.node.torch_env: the venv an operator gets, how it was filled, how it changes."""

import json
import time

import pytest

from sdapi_testlib import molecule_env

VENV = "/opt/sdapi/venv"


def _service_python(host, code):
    return host.run(f"runuser -u sdapi -- {VENV}/bin/python -c %s", code)


def test_service_user_imports_the_pinned_torch(host):
    result = _service_python(host, "import torch; print(torch.__version__, torch.cuda.is_available())")
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["2.13.0+cpu", "False"]


def test_venv_is_root_owned_and_closed_to_other_users(host):
    venv = host.file(VENV)
    assert (venv.user, venv.group, venv.mode) == ("root", "sdapi", 0o750)
    assert host.run(f"runuser -u nobody -- ls {VENV}").rc != 0
    assert host.run(f"runuser -u sdapi -- touch {VENV}/probe").rc != 0


def test_marker_records_the_resolved_set(host):
    record = json.loads(host.file(f"{VENV}/.sdapi-torch-set.json").content_string)
    assert record["profile"] == "cpu"
    assert record["pins"] == ["torch==2.13.0+cpu", "numpy==2.3.5"]
    assert record["source"] == "wheelhouse"


def test_node_has_no_usable_index_so_torch_came_from_the_wheelhouse(host):
    # The premise of the proof: every index the node knows of is unresolvable ...
    probe = host.run(f"{VENV}/bin/pip download --no-deps -d /tmp/probe torch==2.13.0")
    assert probe.rc != 0
    assert "pypi-blocked.invalid" in probe.stdout + probe.stderr
    # ... and yet the pinned torch is installed, from the pushed wheelhouse.
    wheelhouse = host.file("/var/cache/sdapi-wheelhouse")
    assert wheelhouse.is_directory
    wheels = host.check_output("ls /var/cache/sdapi-wheelhouse/*/")
    assert "torch-2.13.0+cpu" in wheels


def test_pushed_wheels_are_not_writable_by_the_service_user(host):
    # root's pip installs these into the venv: the service user must not be able to swap one.
    found = host.check_output(
        "find /var/cache/sdapi-wheelhouse \\( -user sdapi -o -perm /022 \\) -printf '%p\\n'")
    assert found == ""


def _converge(*args, **extra_vars):
    started = time.monotonic()
    rc, output, recap = molecule_env.ansible_playbook(
        molecule_env.converge_playbook(), *args, extra_vars=extra_vars or None
    )
    return rc, output, recap, time.monotonic() - started


def test_rerun_changes_nothing_and_runs_no_pip_install(host, capsys):
    rc, output, recap, seconds = _converge("-v")
    name = molecule_env.name_of(host)
    assert rc == 0, output[-3000:]
    assert recap[name]["changed"] == 0
    pip_lines = [line for line in output.splitlines() if "Install the pinned set" in line]
    assert pip_lines, "the pip task ran"
    assert "pip install" not in output.split("Install the pinned set", 1)[1].split("TASK [", 1)[0]
    with capsys.disabled():
        print(f"\n[torch_env] no-op re-run: {seconds:.1f}s, changed={recap[name]['changed']}")


def test_changing_a_pin_reinstalls_and_restoring_it_reinstalls_back(host):
    name = molecule_env.name_of(host)
    rc, output, recap, _seconds = _converge(torch_env_extra_packages=["numpy==2.3.4"])
    assert rc == 0, output[-3000:]
    assert recap[name]["changed"] > 0
    assert _service_python(host, "import numpy; print(numpy.__version__)").stdout.strip() == "2.3.4"
    rc, output, recap, _seconds = _converge()
    assert rc == 0, output[-3000:]
    assert recap[name]["changed"] > 0
    assert _service_python(host, "import numpy; print(numpy.__version__)").stdout.strip() == "2.3.5"


def test_driver_tasks_run_in_check_mode_without_touching_the_host(host):
    rc, output, recap, _seconds = _converge(
        "--check",
        torch_env_profile="cuda", torch_env_set="a1111-dev", torch_env_torch_version=None,
        torch_env_nvidia_driver_install=True, torch_env_nvidia_driver_force=True,
        torch_env_verify=False,
    )
    assert rc == 0, output[-4000:]
    assert "Enable Debian's non-free components for the driver" in output
    assert not host.file("/etc/apt/sources.list.d/sdapi-debian-nonfree.sources").exists


def test_driver_install_is_skipped_with_a_reason_without_a_gpu(host):
    rc, output, _recap, _seconds = _converge(
        "--check", torch_env_profile="cuda", torch_env_set="a1111-dev", torch_env_torch_version=None,
        torch_env_nvidia_driver_install=True, torch_env_verify=False,
    )
    assert rc == 0, output[-4000:]
    assert "no NVIDIA GPU was found" in output


BAD = [
    ("xformers on cpu", {"torch_env_xformers": True}, "torch_env_xformers"),
    ("pair outside the table",
     {"torch_env_profile": "cuda", "torch_env_set": "a1111-dev", "torch_env_xformers_version": "0.0.34",
      "torch_env_torch_version": None}, "torch_env_xformers_version"),
    ("unknown profile", {"torch_env_profile": "tpu"}, "torch_env_profile"),
    ("unknown set", {"torch_env_set": "a1111-0.9"}, "torch_env_set"),
    ("unknown install mode", {"torch_env_install_mode": "conda"}, "torch_env_install_mode"),
    ("not a bool", {"torch_env_verify": "perhaps"}, "torch_env_verify"),
    ("no compatible interpreter and provisioning off",
     {"torch_env_python": "python3.9", "torch_env_python_provision": False}, "torch_env_python_provision"),
]


@pytest.fixture(scope="module")
def refusals():
    """Every case applied once, side by side: each must fail before touching the host."""
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    return target, molecule_env.apply_role_cases("torch_env", target, {b[0]: b[1] for b in BAD})


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_change(refusals, case):
    target, by_name = refusals
    molecule_env.assert_refused_before_change(by_name[case[0]], target, case[2])
