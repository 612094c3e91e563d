"""Configuration changes as an operator makes them, seen from the controller.

A change that breaks the nginx configuration fails the play and leaves the running proxy
and its live files untouched; no run prints a credential, even at -v with --diff.
"""

from scenario_data import clients, scenario_vars, secrets

from sdapi_testlib import http, molecule_env

testinfra_hosts = ["local://"]

NEW_CLIENT = {"name": "dave", "key": "test-dave-rotated-0123456789KEY"}
LIVE = "/etc/nginx/sdapi.d/proxy.conf /etc/nginx/sdapi.d/secrets.inc /etc/nginx/nginx.conf"


def _status(node, client_key, route="sd-models"):
    status = http.curl(node, f"https://127.0.0.1/sdapi/v1/{route}",
                       "-H", f"Authorization: Bearer {client_key}")[0]
    return status


def test_broken_change_never_goes_live():
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    node = molecule_env.host(target)
    alice = clients()["alice"]["key"]
    live_before = node.check_output(f"sha256sum {LIVE}")
    master_before = node.check_output("cat /run/nginx.pid")
    since = node.check_output("date +%s")
    assert _status(node, alice) == 200

    # A new client and an invalid directive in one change: the test of the staged tree fails.
    rc, output, recap = molecule_env.ansible_playbook(
        molecule_env.playbook("apply-role.yml"), "-v", "--diff",
        extra_vars={
            "target": target,
            "role_under_test": "nginx_proxy",
            "nginx_proxy_clients": scenario_vars()["nginx_proxy_clients"] + [NEW_CLIENT],
            "nginx_proxy_extra_server_directives": ["this_is_not_a_directive on;"],
        },
    )
    try:
        assert rc != 0, output[-3000:]
        assert recap[target]["failed"] == 1, output[-3000:]
        assert "Test the staged configuration" in output and "this_is_not_a_directive" in output
        leaked = [s for s in secrets() + [NEW_CLIENT["key"]] if s in output]
        assert leaked == [], "credentials in the play output"

        # The old configuration still serves, unchanged on disk, and was not reloaded.
        assert node.check_output(f"sha256sum {LIVE}") == live_before
        assert node.check_output("cat /run/nginx.pid") == master_before
        assert _status(node, alice) == 200
        assert _status(node, NEW_CLIENT["key"]) == 401, "the failed change must not be live"
        assert "reload" not in node.check_output(f"journalctl -u nginx --since @{since} --no-pager").lower()
    finally:
        # Back to the inventory's state (this also mends the staging tree), at -v --diff:
        # the credentials file in staging changes back, and is still never printed.
        rc2, output2, recap2 = molecule_env.ansible_playbook(
            molecule_env.converge_playbook(), "-v", "--diff", "--limit", target
        )
    assert rc2 == 0, output2[-3000:]
    assert recap2[target]["changed"] >= 1, "the staging tree held the failed change"
    assert [s for s in secrets() + [NEW_CLIENT["key"]] if s in output2] == []
    assert _status(node, alice) == 200
    assert _status(node, NEW_CLIENT["key"]) == 401
