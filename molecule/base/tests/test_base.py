"""sdapi.node.base as an operator sees it: the user, the layout, CA trust and the firewall."""

import pytest

from sdapi_testlib import molecule_env, net

SERVICE_USER = "sdapi"


def test_service_user_cannot_log_in(host):
    user = host.user(SERVICE_USER)
    assert user.exists
    assert user.group == SERVICE_USER
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000, "a system account, outside the range of people"
    shadow = host.check_output(f"getent shadow {SERVICE_USER}").split(":")[1]
    assert shadow.startswith(("!", "*")), "the account must have no usable password"


@pytest.mark.parametrize(
    "path,owner,group,mode",
    [
        ("/opt/sdapi", "root", "root", 0o755),
        ("/etc/sdapi", "root", SERVICE_USER, 0o750),
        ("/var/lib/sdapi", SERVICE_USER, SERVICE_USER, 0o750),
        ("/var/lib/sdapi/models", SERVICE_USER, SERVICE_USER, 0o750),
        ("/var/lib/sdapi/outputs", SERVICE_USER, SERVICE_USER, 0o750),
        ("/var/lib/sdapi/embeddings", SERVICE_USER, SERVICE_USER, 0o750),
        ("/var/lib/sdapi/cache", SERVICE_USER, SERVICE_USER, 0o750),
    ],
)
def test_layout_owners_and_modes(host, path, owner, group, mode):
    d = host.file(path)
    assert d.is_directory
    assert (d.user, d.group, d.mode) == (owner, group, mode)


def test_service_user_cannot_write_the_code_tree(host):
    probe = host.run(f"setpriv --reuid={SERVICE_USER} --regid={SERVICE_USER} --clear-groups "
                     "touch /opt/sdapi/probe")
    assert probe.rc != 0
    assert not host.file("/opt/sdapi/probe").exists


@pytest.mark.parametrize("command", ["git", "curl", "nft", "python3 -m pip"])
def test_stack_tools_work(host, command):
    assert host.run(f"{command} --version").rc == 0


def test_python_can_make_a_venv_with_pip(host):
    result = host.run("d=$(mktemp -d) && python3 -m venv $d/v && $d/v/bin/python -m pip --version;"
                      " rc=$?; rm -rf $d; exit $rc")
    assert result.rc == 0, result.stderr


def test_extra_ca_is_trusted_by_curl(host):
    # The server certificate was signed by a CA made for this run; prepare.yml proved it
    # untrusted before the role ran.
    host.run("systemctl stop sdapi-test-tls.service")
    host.check_output(
        "systemd-run --unit=sdapi-test-tls --collect timeout 120 openssl s_server -quiet "
        "-accept 127.0.0.1:8443 -cert /root/server.crt -key /root/server.key -www"
    )
    result = host.run(
        "for i in $(seq 50); do curl -sS -o /dev/null -w '%{http_code}' "
        "https://localhost:8443/ && exit 0; sleep 0.1; done; exit 1"
    )
    host.run("systemctl stop sdapi-test-tls.service")
    assert result.rc == 0, result.stderr
    assert result.stdout == "200"


def test_firewall_policy_is_live(host):
    ruleset = host.check_output("nft list chain inet sdapi_filter input")
    assert "policy drop" in ruleset
    assert host.service("nftables").is_enabled


def _probe_from(client, node, ports):
    address = molecule_env.address_of(node)
    return {port: net.tcp_state(client, address, port) for port in ports}


PORTS = [22, 443, 7861, 9100, 9999]


def test_proxy_host_reaches_ssh_https_and_backend_only(host):
    net.start_listeners(host, [443, 7861, 9100, 9999])
    peer = molecule_env.host(molecule_env.group_hosts("proxies")[0])
    assert _probe_from(peer, host, PORTS) == {
        22: "open",
        443: "open",
        7861: "open",  # backend port, open to the listed proxy
        9100: "open",  # extra rule for the peer's address
        9999: "timeout",  # nothing opened it: dropped, not even refused
    }


def test_other_hosts_reach_ssh_and_https_only(host):
    net.start_listeners(host, [443, 7861, 9100, 9999])
    others = [n for n in molecule_env.group_hosts("sdapi_nodes") if n != molecule_env.name_of(host)]
    other = molecule_env.host(others[0])
    assert _probe_from(other, host, PORTS) == {
        22: "open",
        443: "open",
        7861: "timeout",
        9100: "timeout",
        9999: "timeout",
    }
