"""Bad input to sdapi.node.nginx_proxy fails before anything changes, naming the variable."""


import pytest
from scenario_data import secrets

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]

CASES = [
    ("wrong type", {"nginx_proxy_https_port": "four-four-three"}, "nginx_proxy_https_port"),
    ("unknown TLS profile", {"nginx_proxy_tls_profile": "legacy"}, "nginx_proxy_tls_profile"),
    ("no clients while auth is required", {"nginx_proxy_clients": []}, "nginx_proxy_clients"),
    ("key too short", {"nginx_proxy_clients": [{"name": "eve", "key": "short-secret-kx"}]},
     "nginx_proxy_clients"),
    ("bad rate", {"nginx_proxy_generation_rate": "fast"}, "nginx_proxy_generation_rate"),
    ("dangerous route without opt-in",
     {"nginx_proxy_extra_routes": [{"path": "cmd-flags", "methods": ["GET"]}]},
     "nginx_proxy_dangerous_routes_opt_in"),
    ("public route not allowed", {"nginx_proxy_public_routes": ["cmd-flags"]}, "nginx_proxy_public_routes"),
    ("bad query argument name",
     {"nginx_proxy_extra_routes": [{"path": "png-info-v2", "methods": ["GET"], "query": ["api_key;x"]}]},
     "nginx_proxy_extra_routes"),
    ("provided mode without certificate", {"nginx_proxy_tls_mode": "provided"},
     "nginx_proxy_tls_certificate"),
    ("no upstream", {"nginx_proxy_backend_group": "no_such_group"}, "nginx_proxy_backend_group"),
]


@pytest.fixture(scope="module")
def runs():
    """Every case's play, run side by side: each fails before touching the host."""
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    results = molecule_env.apply_role_cases("nginx_proxy", target, {c[0]: c[1] for c in CASES})
    return {name: (target, result) for name, result in results.items()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_change(runs, case):
    name, _extra_vars, variable = case
    target, (rc, output, recap) = runs[name]
    molecule_env.assert_refused_before_change((rc, output, recap), target, variable)
    assert "short-secret-kx" not in output
    assert [s for s in secrets() if s in output] == []
