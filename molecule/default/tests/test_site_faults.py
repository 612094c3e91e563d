"""Faults on the whole node and how it recovers, each with the seconds it took.

Order matters: every test leaves the node converged, healthy and as it found it (its
fixtures put back what it broke), because the tests after this module and a later
check-mode run expect exactly that. The repair run of the site comes before the failing
upgrade (whose run leaves release bookkeeping behind that its fixture puts back), and the
host restart comes last: it proves that everything the earlier tests touched also
survives a boot.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

from sdapi_testlib import molecule_env, site

# Times this module and prints the running total of the whole-site modules.
site_timer = site.module_timer()

PROXY_CONF = "/etc/nginx/sdapi.d/proxy.conf"
STAGED_CONF = "/etc/nginx/sdapi-staging/sdapi.d/proxy.conf"
DEFAULT_MODEL = "double.safetensors"
ALT_MODEL = "double-alt.safetensors"
RELEASES = "/opt/sdapi/webui/releases"
MARKERS = "/opt/sdapi/venv/.sdapi-webui-*"
KEPT = "/var/lib/sdapi/outputs/site-proof-kept.txt"
# Long enough for a Restart=on-failure with a few seconds' RestartSec, short enough not to
# cost much while nginx.service has none.
NGINX_WAIT = 10


@pytest.fixture(scope="module")
def key():
    return site.clients()["site-test"]


def _generates(n, key) -> bool:
    status, answer = site.proxy(n, "txt2img", key, "POST", site.TXT2IMG)
    return status == 200 and bool(answer.get("images"))


def _serving(n, key) -> bool:
    return site.proxy(n, "sd-models", key)[0] == 200


def test_kill_9_of_every_webui_instance(node, key, request):
    units = [f"sdapi-webui@{i}.service" for i in site.instances(node)]
    before = {u: site.unit_state(node, u)["InvocationID"] for u in units}
    started = time.monotonic()
    node.check_output("systemctl kill --signal=KILL " + " ".join(units))
    site.wait_for(lambda: all(site.unit_state(node, u)["InvocationID"] not in ("", before[u]) for u in units),
                  60, "every instance restarted by systemd")
    site.wait_for(lambda: site.all_ready(node), 120, "every instance ready again")
    ready = time.monotonic() - started
    # Only now through the proxy: a generation spent on a dead backend would cost rate budget.
    site.wait_for(lambda: _generates(node, key), 20, "txt2img through the proxy", interval=1)
    total = time.monotonic() - started
    site.report(request.config, f"kill -9 of {len(units)} webui instances: all ready in {ready:.1f} s, "
                                f"txt2img through the proxy in {total:.1f} s")


@pytest.fixture()
def instances_put_back(node):
    """Every instance running and ready, and no nginx worker holding one marked down."""
    yield
    units = " ".join(f"sdapi-webui@{i}" for i in site.instances(node))
    # Cleared first, as the role does before a deploy: test restarts count against the
    # units' start limit (5 in 10 min), and a refused start would leave the node down.
    node.check_output(f"systemctl reset-failed {units}; systemctl start {units}")
    site.wait_for(lambda: site.all_ready(node), 120, "every instance ready again")
    site.settle_proxy(node)


# With failure marks on loopback servers (max_fails=1, fail_timeout=10 s, per worker), the
# workers that saw every instance down answered 502 "no live upstreams" for up to
# fail_timeout after the instances were back. Loopback servers now carry max_fails=0: the
# proxy must serve the moment they are ready.
def test_proxy_serves_as_soon_as_the_instances_are_back(node, key, request, instances_put_back):
    units = " ".join(f"sdapi-webui@{i}" for i in site.instances(node))
    fail_timeout = site.role_default("nginx_proxy", "nginx_proxy_upstream_fail_timeout")
    # From fresh workers, so that every mark below is made now, by this test.
    site.settle_proxy(node)
    workers = set(node.check_output("pgrep -f '^nginx: worker'").split())
    since = int(node.check_output("wc -l < /var/log/nginx/error.log"))
    node.check_output(f"systemctl stop {units}")
    # Clients keep asking while every instance is down, until every worker has met a refusal.
    during, seen_by = [], set()
    for _attempt in range(5):
        run = site.run_requests(node, {"during": [site.request("GET", "/sdapi/v1/progress", key)] * 8}, workers=8,
                                max_seconds=10)
        during += [r["status"] for r in run["results"]]
        seen_by = site.upstream_failure_workers(node, since)
        if workers <= seen_by:
            break
    marked = time.monotonic()
    if not workers <= seen_by:
        pytest.skip(f"only workers {seen_by} of {workers} met the outage")
    node.check_output(f"systemctl reset-failed {units}; systemctl start {units}")
    site.wait_for(lambda: site.all_ready(node), 60, "every instance ready again")
    back = time.monotonic() - marked
    if back > fail_timeout - 2:
        pytest.skip(f"the instances took {back:.1f} s, too close to fail_timeout ({fail_timeout} s) to tell")
    after = site.run_requests(node, {"after": [site.request("GET", "/sdapi/v1/progress", key)] * 10}, max_seconds=10)
    statuses = [r["status"] for r in after["results"]]
    site.report(request.config, f"every instance down: {sorted(set(during))} through the proxy; back and ready in "
                                f"{back:.1f} s, then 10 requests through the proxy: {statuses}")
    assert statuses == [200] * 10


@pytest.fixture()
def nginx_put_back(node, key):
    """Whatever the test saw, nginx runs and serves afterwards."""
    yield
    if node.run("systemctl is-active nginx").stdout.strip() != "active":
        node.check_output("systemctl reset-failed nginx.service; systemctl start nginx.service")
    site.wait_for(lambda: _serving(node, key), 30, "nginx serving again after the test")


# Debian's nginx.service has Restart=no; nginx_proxy's drop-in sets Restart=on-failure.
def test_kill_9_of_the_nginx_master(node, key, request, nginx_put_back):
    master = node.check_output("cat /run/nginx.pid")
    started = time.monotonic()
    node.check_output(f"kill -9 {master}")
    try:
        site.wait_for(lambda: node.run("cat /run/nginx.pid").stdout.strip() not in ("", master)
                      and _serving(node, key), NGINX_WAIT, "nginx back and serving HTTPS", interval=1)
    except AssertionError:
        state = site.unit_state(node, "nginx.service")
        site.report(request.config, f"nginx master kill -9: not back after {NGINX_WAIT} s (ActiveState={state['ActiveState']}, "
                                    f"Result={state['Result']}, NRestarts={state['NRestarts']})")
        raise
    site.report(request.config, f"nginx master kill -9: serving HTTPS again in {time.monotonic() - started:.1f} s")


def _listed(n, key) -> list[str]:
    return sorted(m["filename"].rsplit("/", 1)[-1] for m in site.proxy(n, "sd-models", key)[1])


def _refresh_checkpoints(n):
    """What an operator does after changing the model dir by hand: each instance re-reads it
    (on its loopback; the proxy denies the route to clients)."""
    for port in site.instances(n).values():
        assert site.backend(n, port, "refresh-checkpoints", "POST", {})[0] == 200


@pytest.fixture(scope="class")
def damaged(node, key):
    """Breaks the node, records what clients see meanwhile, runs the site; afterwards puts
    back the checkpoints as the inventory has them (one, unaltered)."""
    seen = {}
    alt = f"{site.MODEL_DIR}/{ALT_MODEL}"
    default = f"{site.MODEL_DIR}/{DEFAULT_MODEL}"
    # A second checkpoint, listed by every instance, so one can go while the other serves.
    node.check_output(f"install -o sdapi -g sdapi -m 0640 /srv/models/{ALT_MODEL} {alt}")
    _refresh_checkpoints(node)
    try:
        seen["listed before"] = _listed(node, key)
        seen["states"] = {i: site.unit_state(node, f"sdapi-webui@{i}.service") for i in site.instances(node)}

        node.check_output(f"printf '\\nthis is not nginx configuration {{\\n' >> {PROXY_CONF}")
        seen["nginx -t while broken"] = node.run("nginx -t -q").rc
        # nginx keeps the configuration it loaded; the break would bite at the next reload.
        seen["serving while broken"] = _serving(node, key)

        node.check_output(f"rm {alt}")
        seen["txt2img"] = site.proxy(node, "txt2img", key, "POST", site.TXT2IMG)
        # Asking for the deleted checkpoint the A1111 way (override_settings), through the
        # settings route the proxy denies, and on the backend itself.
        ask = {"sd_model_checkpoint": ALT_MODEL.removesuffix(".safetensors")}
        seen["txt2img asking for it"] = site.proxy(node, "txt2img", key, "POST",
                                                   dict(site.TXT2IMG, override_settings=ask))
        seen["POST options via proxy"] = site.proxy(node, "options", key, "POST", ask)[0]
        port = min(site.instances(node).values())
        seen["POST options on backend"] = site.backend(node, port, "options", "POST", ask)
        seen["listed after delete"] = _listed(node, key)
        seen["states after"] = {i: site.unit_state(node, f"sdapi-webui@{i}.service") for i in site.instances(node)}

        # The checkpoint the instances run, altered in place (what a compromised service
        # account or a bad disk could do): it stays the name the inventory lists.
        node.check_output(f"sh -c 'printf tampered >> {default}'")

        # The inventory's checkpoint plus the second one, both with their published sums.
        models = [{"name": m, "url": f"file:///srv/models/{m}", "sha256": site.published_sha256(m)}
                  for m in (DEFAULT_MODEL, ALT_MODEL)]
        seen["run"] = site.run_site(extra_vars={"webui_models": models})
        yield seen
    finally:
        node.check_output(f"rm -f {alt}")
        node.check_output(f"install -o sdapi -g sdapi -m 0640 /srv/models/{DEFAULT_MODEL} {default}")
        _refresh_checkpoints(node)
        assert node.file(default).sha256sum == site.published_sha256(DEFAULT_MODEL)


class TestDamagedNodeRepairedBySiteRun:
    """Hand-made faults while the node serves, then one site run.

    A hand-edited nginx site file that no longer parses, a checkpoint deleted from the
    model dir, and the running checkpoint altered in place. One run (not one per fault)
    keeps the suite within its time budget; it must change exactly the two repairs it
    knows of and nothing else.
    """

    def test_one_run_changes_exactly_the_repairs(self, damaged, request):
        rc, output, recap, seconds = damaged["run"]
        host = molecule_env.group_hosts("sdapi_nodes")[0]
        changed = site.changed_tasks(output, host)
        site.report(request.config, f"repair run: {seconds:.1f} s, changed {recap[host]['changed']}: {changed}")
        assert rc == 0, output[-3000:]
        assert changed == ["sdapi.node.webui : Remove models whose checksum no longer matches (fetched again below)",
                           "sdapi.node.webui : Download models with checksum verification",
                           "sdapi.node.nginx_proxy : Activate the tested configuration",
                           "sdapi.node.nginx_proxy : Reload nginx"], output[-3000:]

    def test_nginx_config_repaired_validated_and_serving(self, node, key, damaged, request):
        assert damaged["nginx -t while broken"] != 0, "the edit must break the configuration"
        assert damaged["serving while broken"]
        assert node.run("nginx -t -q").rc == 0
        sums = node.check_output(f"sha256sum {PROXY_CONF} {STAGED_CONF}").split()
        assert sums[0] == sums[2], "the live file is the tested one again"
        assert _generates(node, key)
        site.report(request.config, "broken nginx config: nginx -t failed on it, the old configuration kept "
                                    "serving, the site run put the tested file back and reloaded; txt2img 200")

    def test_deleted_checkpoint_left_the_other_serving(self, damaged, request):
        assert damaged["listed before"] == sorted([DEFAULT_MODEL, ALT_MODEL])
        for instance, before in damaged["states"].items():
            after = damaged["states after"][instance]
            assert (after["ActiveState"], after["InvocationID"]) == ("active", before["InvocationID"]), after
        status, answer = damaged["txt2img"]
        assert status == 200 and site.model_of(answer) == "double", answer
        # Never an image attributed to a checkpoint whose file is gone.
        status_ask, answer_ask = damaged["txt2img asking for it"]
        assert status_ask != 200 or site.model_of(answer_ask) != ALT_MODEL.removesuffix(".safetensors")
        assert damaged["POST options via proxy"] == 403
        site.report(request.config,
                    f"checkpoint deleted while serving: instances up; txt2img 200 from 'double'; sd-models still "
                    f"lists {damaged['listed after delete']}; txt2img asking for it: {status_ask} from "
                    f"{site.model_of(answer_ask)!r}; POST options: {damaged['POST options via proxy']} through the "
                    f"proxy, {damaged['POST options on backend']} on the backend")

    def test_deleted_checkpoint_restored_with_its_checksum(self, node, damaged):
        restored = node.file(f"{site.MODEL_DIR}/{ALT_MODEL}")
        assert (restored.user, restored.group, restored.mode) == ("sdapi", "sdapi", 0o640)
        assert restored.sha256sum == site.published_sha256(ALT_MODEL)

    # Each run hashes the models in place (webui_models_verify) and fetches again any whose
    # sum is not the inventory's.
    def test_altered_checkpoint_replaced_by_the_run(self, node, damaged):
        assert node.file(f"{site.MODEL_DIR}/{DEFAULT_MODEL}").sha256sum == site.published_sha256(DEFAULT_MODEL)


@pytest.fixture()
def release_bookkeeping(node):
    """Puts back what a deploy of another release leaves behind: a requirement-set marker of
    its own (when its set differs) and the broken release's checkout."""
    def markers():
        out = node.check_output(f"grep -H . {MARKERS} || true")
        return dict(line.split(":", 1) for line in out.splitlines())

    before = markers()
    node.check_output(f"install -o sdapi -g sdapi -m 0640 /dev/null {KEPT}")
    node.check_output(f"sh -c 'echo kept > {KEPT}'")
    yield
    for path in set(markers()) - set(before):
        node.check_output(f"rm {path}")
    for path, content in before.items():
        node.check_output("sh -c %s", f"printf '%s\\n' '{content}' > {path}")
    assert markers() == before
    node.check_output(f"rm -rf {RELEASES}/broken /opt/sdapi/webui/constraints-broken.txt {KEPT}")


def test_failing_upgrade_rolls_back_to_the_running_release(node, key, request, release_bookkeeping):
    before = site.data_checksums(node)
    assert "site-proof-kept.txt" in before
    rc, output, recap, seconds = site.run_site(extra_vars={"webui_version": "broken"})
    host = molecule_env.group_hosts("sdapi_nodes")[0]
    assert rc != 0 and recap[host]["failed"] == 1, output[-3000:]
    # The play says why, and where it went back to.
    assert "this release is broken on purpose" in output, output[-3000:]
    assert f"Rolled back to {RELEASES}/v1, which is running and ready again." in output, output[-3000:]
    assert node.file("/opt/sdapi/webui/current").linked_to == f"{RELEASES}/v1"
    for instance in site.instances(node):
        pid = site.unit_state(node, f"sdapi-webui@{instance}.service")["MainPID"]
        assert node.check_output(f"readlink /proc/{pid}/cwd") == f"{RELEASES}/v1"
    assert site.all_ready(node)
    assert _generates(node, key)
    assert site.data_checksums(node) == before
    site.report(request.config, f"failing upgrade to 'broken': run failed with the reason and rolled back to v1 "
                                f"in {seconds:.1f} s; models and outputs unchanged; txt2img 200")


def _controller_generates(url, ca, key) -> bool:
    try:
        answer = requests.post(f"{url}/sdapi/v1/txt2img", json=site.TXT2IMG, verify=str(ca), timeout=20,
                               headers={"Authorization": f"Bearer {key}"})
    except requests.RequestException:
        return False
    return answer.status_code == 200 and bool(answer.json().get("images"))


def _ssh_answers() -> bool:
    inventory = molecule_env.group_hosts("sdapi_nodes")[0]
    proc = subprocess.run(["ansible", "-i", f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/inventory",
                           inventory, "-m", "ansible.builtin.ping", "-o"],
                          capture_output=True, text=True, check=False, timeout=60)
    return proc.returncode == 0 and "SUCCESS" in proc.stdout


def test_host_restart_brings_the_node_back(node, key, request, tmp_path):
    url = site.https_url()
    ca = site.node_certificate(node, tmp_path / "node.crt")
    units = ["nftables.service", "nginx.service", "ssh.service"] + [
        f"sdapi-webui@{i}.service" for i in site.instances(node)]
    ruleset = node.check_output("nft list table inet sdapi_filter")
    sysctl_file = node.check_output("cat /etc/sysctl.d/90-sdapi.conf")

    name = molecule_env.name_of(node)
    invocations = {u: site.unit_state(node, u)["InvocationID"] for u in units}

    started = time.monotonic()
    subprocess.run(["podman", "restart", name], check=True, timeout=120, capture_output=True)
    container = time.monotonic() - started
    site.wait_for(lambda: _controller_generates(url, ca, key), 180, "txt2img through HTTPS from the controller",
                  interval=1)
    api = time.monotonic() - started
    site.wait_for(_ssh_answers, 60, "SSH (ansible ping)", interval=1)
    ssh = time.monotonic() - started
    site.report(request.config, f"host restart (podman restart): container back in {container:.1f} s, txt2img "
                                f"through HTTPS from the controller in {api:.1f} s, SSH answering at {ssh:.1f} s")

    for unit in units:
        assert node.service(unit).is_enabled, unit
        state = site.unit_state(node, unit)
        # Started anew by this boot, not left over from before it.
        assert state["ActiveState"] == "active" and state["InvocationID"] != invocations[unit], (unit, state)
    assert site.all_ready(node)
    # The firewall is live again, as it was: default drop, the same rules.
    assert node.check_output("nft list table inet sdapi_filter") == ruleset
    assert "policy drop" in ruleset
    # kernel_tuning: the file is still there; which keys this container can set at all.
    assert node.check_output("cat /etc/sysctl.d/90-sdapi.conf") == sysctl_file
    wanted = dict(line.split("=", 1) for line in sysctl_file.splitlines() if "=" in line and not line.startswith("#"))
    writable = [k for k in wanted if node.run(f"test -w /proc/sys/{k.replace('.', '/')}").rc == 0]
    sysctl_unit = site.unit_state(node, "systemd-sysctl.service")
    live = {k: node.run(f"sysctl -n {k}").stdout.strip() or "absent" for k in wanted}
    assert {k: live[k] for k in writable} == {k: wanted[k] for k in writable}
    nofile = node.check_output("systemctl show -p LimitNOFILESoft --value sdapi-webui@0.service")
    assert nofile == "65536", nofile
    site.report(request.config, f"after the restart: sysctl keys writable in this container: {writable or 'none'} "
                                f"(/proc/sys is read-only; systemd-sysctl {sysctl_unit['ActiveState']}); live values "
                                f"{live}; webui LimitNOFILESoft {nofile}")
