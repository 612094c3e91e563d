"""sdapi.node.kernel_tuning as an operator sees it: values live in the kernel, swap on,
read-ahead on the model disk surviving the unit's restart, limits reaching the webui unit.

kt-bookworm is privileged: net.* keys land in its own network namespace, vm.* keys, THP,
read-ahead and swap in the CI host's kernel (recorded by record-host-state.sh and put back
by cleanup.yml). kt-trixie is unprivileged: /proc/sys and /sys are read-only there.
"""

from pathlib import Path

import pytest

from sdapi_testlib import molecule_env

PRIVILEGED = "kt-bookworm"
UNPRIVILEGED = "kt-trixie"
SYSCTL_FILE = "/etc/sysctl.d/90-sdapi.conf"
TEST_DIR = "/host-var-tmp/sdapi-molecule-kernel-tuning"
SWAP_FILE = f"{TEST_DIR}/swapfile"
MODEL_DIR = f"{TEST_DIR}/models"
HOST_STATE = Path("/var/tmp/sdapi-molecule-kernel-tuning.state")

# The role's map with the scenario's overrides (molecule.yml) merged over it.
EFFECTIVE = {
    "vm.swappiness": "10",
    "vm.dirty_background_ratio": "5",
    "vm.dirty_ratio": "10",
    "vm.max_map_count": "1048576",
    "net.core.somaxconn": "16384",
    "net.core.default_qdisc": "fq",
    "net.ipv4.tcp_congestion_control": "bbr",
    "net.ipv4.tcp_fin_timeout": "30",
}
VM_KEYS = {k: v for k, v in EFFECTIVE.items() if k.startswith("vm.")}
# net.* keys a container's own namespace offers (default_qdisc lives in the host's only).
NETNS_KEYS = {k: v for k, v in EFFECTIVE.items() if k.startswith("net.") and k != "net.core.default_qdisc"}


def _proc(key):
    return "/proc/sys/" + key.replace(".", "/")


def _node(name):
    return molecule_env.host(name)


def test_sysctl_file_holds_exactly_the_effective_map(host):
    lines = host.file(SYSCTL_FILE).content_string.splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    assert {k.strip(): v.strip() for k, v in pairs} == EFFECTIVE
    assert len(pairs) == len(EFFECTIVE), "every key exactly once"
    assert "net.ipv4.tcp_slow_start_after_idle" not in host.file(SYSCTL_FILE).content_string


@pytest.mark.parametrize("key", sorted(NETNS_KEYS))
def test_net_keys_live_in_the_privileged_containers_namespace(key):
    assert _node(PRIVILEGED).file(_proc(key)).content_string.strip() == NETNS_KEYS[key]


@pytest.mark.parametrize("key", sorted(VM_KEYS))
def test_vm_keys_live_in_the_kernel(key):
    # Seen from inside the container and from the CI host itself: the same, global value.
    assert _node(PRIVILEGED).file(_proc(key)).content_string.strip() == VM_KEYS[key]
    assert Path(_proc(key)).read_text().strip() == VM_KEYS[key]


def test_unprivileged_node_degrades_to_file_only():
    node = _node(UNPRIVILEGED)
    assert not node.run("sh -c 'echo 10 > /proc/sys/vm/swappiness'").succeeded, "/proc/sys must be read-only"
    # Its own network namespace kept the kernel default: the role did not pretend to set it.
    assert node.file("/proc/sys/net/core/somaxconn").content_string.strip() == "4096"
    unit = node.run("systemctl show -p UnitFileState -p ConditionResult sdapi-sysfs-tuning.service").stdout
    assert "UnitFileState=enabled" in unit
    node.run("systemctl start sdapi-sysfs-tuning.service")
    after = node.check_output("systemctl show -p ConditionResult -p ActiveState sdapi-sysfs-tuning.service")
    assert "ConditionResult=no" in after and "ActiveState=inactive" in after


def test_host_record_covers_every_vm_key():
    recorded = {line.split("\t")[0] for line in HOST_STATE.read_text().splitlines()}
    assert {_proc(k) for k in VM_KEYS} <= recorded
    assert "/sys/kernel/mm/transparent_hugepage/enabled" in recorded


def test_swap_file_active_and_persisted():
    node = _node(PRIVILEGED)
    shown = [line.split() for line in node.check_output("swapon --show=NAME,TYPE --noheadings").splitlines()]
    assert [SWAP_FILE, "file"] in shown
    swap = node.file(SWAP_FILE)
    assert (swap.user, swap.mode, swap.size) == ("root", 0o600, 64 * 1024 * 1024)
    fstab = [line.split() for line in node.file("/etc/fstab").content_string.splitlines()]
    assert [SWAP_FILE, "none", "swap", "sw", "0", "0"] in fstab


def _model_device_queue(node):
    majmin = node.check_output(f"findmnt -n -o MAJ:MIN --target {MODEL_DIR}").strip()
    sysdev = node.check_output(f"readlink -f /sys/dev/block/{majmin}")
    if not node.file(f"{sysdev}/queue").exists:
        sysdev = sysdev.rsplit("/", 1)[0]
    return f"{sysdev}/queue/read_ahead_kb"


def test_read_ahead_live_and_restored_by_the_units_restart():
    node = _node(PRIVILEGED)
    path = _model_device_queue(node)
    assert node.file(path).content_string.strip() == "6144"
    node.check_output(f"sh -c 'echo 128 > {path}'")
    node.check_output("systemctl restart sdapi-sysfs-tuning.service")
    assert node.file(path).content_string.strip() == "6144"


def test_thp_mode_live():
    thp = _node(PRIVILEGED).file("/sys/kernel/mm/transparent_hugepage/enabled").content_string
    assert "[never]" in thp


@pytest.mark.parametrize("name", [PRIVILEGED, UNPRIVILEGED])
def test_webui_instances_get_the_open_file_limits(name):
    node = _node(name)
    node.check_output("systemctl start sdapi-webui@0.service")
    try:
        pid = node.check_output("systemctl show -p MainPID --value sdapi-webui@0.service")
        limits = node.check_output(f"grep 'Max open files' /proc/{pid}/limits").split()
    finally:
        node.run("systemctl stop sdapi-webui@0.service")
    assert limits[3:5] == ["16384", "20000"]


@pytest.mark.parametrize("name", [PRIVILEGED, UNPRIVILEGED])
def test_service_user_sessions_get_the_open_file_limits(name):
    out = _node(name).check_output("runuser -u sdapi -- sh -c 'ulimit -Sn; ulimit -Hn'")
    assert out.split() == ["16384", "20000"]


@pytest.fixture(scope="module")
def rerun_with_other_swap_path():
    """The role again, asked for a swap file elsewhere while the first one is active."""
    return molecule_env.ansible_playbook(
        molecule_env.playbook("apply-role.yml"),
        extra_vars={
            "role_under_test": "kernel_tuning",
            "kernel_tuning_swap_file_path": f"{TEST_DIR}/second-swapfile",
        },
    )


def test_existing_swap_is_left_alone(rerun_with_other_swap_path):
    rc, output, recap = rerun_with_other_swap_path
    assert rc == 0, output[-4000:]
    assert recap[PRIVILEGED]["changed"] == 0, output[-4000:]
    assert f"Swap is already active on this host ({SWAP_FILE})" in output
    node = _node(PRIVILEGED)
    assert not node.file(f"{TEST_DIR}/second-swapfile").exists
    assert SWAP_FILE in node.check_output("swapon --show=NAME --noheadings")


def test_nvidia_persistenced_skipped_with_a_reason(rerun_with_other_swap_path):
    rc, output, recap = rerun_with_other_swap_path
    reason = ("nvidia-persistenced skipped: the NVIDIA driver is not loaded on this host "
              "(no /proc/driver/nvidia/version).")
    assert output.count(reason) == 2, output[-4000:]
    assert not _node(PRIVILEGED).file("/etc/systemd/system/nvidia-persistenced.service.d").exists


def test_read_only_nodes_say_why_nothing_is_live(rerun_with_other_swap_path):
    rc, output, recap = rerun_with_other_swap_path
    assert recap[UNPRIVILEGED]["changed"] == 0, output[-4000:]
    assert "/proc/sys is read-only on this host (an unprivileged container)" in output
    assert "/sys is read-only on this host (an unprivileged container)" in output
