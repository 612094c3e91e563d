"""Bad input to sdapi.node.base fails before anything changes, naming the variable."""

import pytest

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]

CASES = [
    ("wrong type", {"base_firewall_ssh_port": "twenty-two"}, "base_firewall_ssh_port"),
    ("not a bool", {"base_firewall_enabled": "maybe"}, "base_firewall_enabled"),
    ("list expected", {"base_extra_packages": {"a": 1}}, "base_extra_packages"),
    ("unknown choice", {"base_firewall_extra_rules": [{"port": 53, "protocol": "icmp"}]},
     "base_firewall_extra_rules"),
    ("missing required", {"base_extra_ca_certificates": [{"content": "x"}]},
     "base_extra_ca_certificates"),
    ("neither content nor src", {"base_extra_ca_certificates": [{"name": "corp"}]},
     "base_extra_ca_certificates"),
    ("not an address", {"base_firewall_backend_sources": ["proxy.example"]},
     "base_firewall_backend_sources"),
    ("port out of range", {"base_firewall_public_tcp_ports": [443, 70000]},
     "base_firewall_public_tcp_ports"),
    ("backend port clashes", {"base_firewall_backend_ports": [443]}, "base_firewall_backend_ports"),
    ("path escapes data dir", {"base_data_subdirs": ["../../etc"]}, "base_data_subdirs"),
    ("bad user name", {"base_service_user": "Root User"}, "base_service_user"),
]


@pytest.fixture(scope="module")
def results():
    """Every case applied once, side by side: each must fail before touching the host."""
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    return target, molecule_env.apply_role_cases("base", target, {c[0]: c[1] for c in CASES})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_change(results, case):
    target, by_name = results
    molecule_env.assert_refused_before_change(by_name[case[0]], target, case[2])
