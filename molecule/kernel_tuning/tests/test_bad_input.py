"""Bad input to sdapi.node.kernel_tuning fails before anything changes, naming the variable."""

import pytest

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]

OVR = "kernel_tuning_sysctl_overrides"
CASES = [
    ("swappiness not an integer", {OVR: {"vm.swappiness": "ten"}}, OVR, "vm.swappiness must be an integer"),
    ("swappiness above 200", {OVR: {"vm.swappiness": 201}}, OVR, "from 0 to 200"),
    ("overcommit 2", {OVR: {"vm.overcommit_memory": 2}}, OVR, "vm.overcommit_memory=2 is refused"),
    ("boolean value", {OVR: {"vm.max_map_count": True}}, OVR, "must be an integer or a one-line string"),
    ("not a sysctl name", {OVR: {"VM swappiness": 1}}, OVR, "is not a sysctl key name"),
    ("overrides not a dict", {OVR: ["vm.swappiness=10"]}, OVR, "dict"),
    ("unknown THP mode", {"kernel_tuning_thp_mode": "sometimes"}, "kernel_tuning_thp_mode", "madvise"),
    ("size not an int", {"kernel_tuning_swap_file_size_mb": "big"}, "kernel_tuning_swap_file_size_mb", "int"),
    ("shrinking the live swap", {"kernel_tuning_swap_file_size_mb": 32},
     "kernel_tuning_swap_file_allow_shrink", "smaller than the active swap file"),
    ("soft limit above hard", {"kernel_tuning_nofile_soft": 30000}, "kernel_tuning_nofile_soft", "<="),
]


@pytest.fixture(scope="module")
def results():
    """Every case applied once, side by side, to the privileged node: the one with a live
    swap file and writable kernel values."""
    return molecule_env.apply_role_cases("kernel_tuning", "kt-bookworm", {c[0]: c[1] for c in CASES})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_change(results, case):
    name, _extra_vars, variable, reason = case
    molecule_env.assert_refused_before_change(results[name], "kt-bookworm", variable, reason)
