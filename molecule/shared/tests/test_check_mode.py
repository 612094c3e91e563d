"""A converged node is left alone by a check-mode run: nothing would change."""

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]


def test_check_mode_on_converged_node_changes_nothing():
    rc, output, recap = molecule_env.ansible_playbook(
        molecule_env.converge_playbook(), "--check", "--diff"
    )
    assert rc == 0, output[-4000:]
    nodes = molecule_env.group_hosts("sdapi_nodes")
    assert nodes and set(nodes) <= set(recap), output[-4000:]
    changed = {name: recap[name]["changed"] for name in nodes if recap[name]["changed"]}
    assert changed == {}, output[-6000:]
