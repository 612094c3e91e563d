"""Credentials (the API keys and the backend's Basic password) stay out of what operators,
CI logs and log shippers read: the site playbook's output at -vvv, the node's whole
journal, and nginx's logs.

One place is outside a role's reach: at -vvv Ansible's connection prints the remote
command line of every task, and a task's `environment:` values are part of it, whatever
no_log says. No role passes a credential that way (webui's readiness probe reads it from
the environment file), so the strict reading holds: nowhere at all. A looser test names
the place, should a task's environment ever carry one again.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from sdapi_testlib import molecule_env, site

# Times this module and prints the running total of the whole-site modules.
site_timer = site.module_timer()

SSH_EXEC = "SSH: EXEC "


@pytest.fixture(scope="module")
def secrets():
    found = site.secrets()
    assert any(label.startswith("key of") for label in found)
    assert any(label.startswith("backend password") for label in found)
    return found


def _keys(secrets):
    return {label: value for label, value in secrets.items() if label.startswith("key of")}


def _backend(secrets):
    return {label: value for label, value in secrets.items() if not label.startswith("key of")}


@pytest.fixture(scope="module")
def vvv(request):
    with pytest.MonkeyPatch.context() as env:
        # Molecule (ansible-compat) sends verbose lines to stderr; on stdout they stay next to
        # the task that printed them.
        env.setenv("ANSIBLE_VERBOSE_TO_STDERR", "False")
        rc, output, recap, seconds = site.run_site("-vvv")
    host = molecule_env.group_hosts("sdapi_nodes")[0]
    site.report(request.config, f"site at -vvv: {len(output.encode())} bytes of output in {seconds:.1f} s, "
                                f"changed {recap.get(host, {}).get('changed')}")
    assert rc == 0, output[-3000:]
    return output, recap[host]


def _hits(output: str, secrets: dict[str, str]) -> list[tuple[str, str, str]]:
    """(secret label, task, line) of every output line holding a secret."""
    hits, task = [], "(before the first task)"
    for line in output.splitlines():
        header = site.TASK.match(line)
        if header:
            task = header.group(1)
        hits += [(label, task, line) for label, value in secrets.items() if value in line]
    return hits


def test_site_at_vvv_changes_nothing(vvv):
    # The tests before this module put back whatever they broke: the node is converged.
    _output, recap = vvv
    assert recap["changed"] == 0 and recap["failed"] == 0


def test_api_keys_absent_from_the_vvv_output(vvv, secrets):
    output, _recap = vvv
    assert [(label, task) for label, task, _line in _hits(output, _keys(secrets))] == []


def test_backend_credential_only_in_task_environments_at_vvv(vvv, secrets, request):
    output, _recap = vvv
    backend = _backend(secrets)
    hits = _hits(output, backend)
    # Allowed: the connection's remote command, where the value is an environment assignment.
    outside = [(label, task, line[:200]) for label, task, line in hits
               if SSH_EXEC not in line or not re.search(rf"\b[A-Z][A-Z0-9_]*=[^ ]*{re.escape(backend[label])}", line)]
    site.report(request.config, f"backend credential at -vvv: {len(hits)} lines, all in the connection's "
                                f"remote command (environment: of {sorted({t for _l, t, _x in hits})})"
                if not outside else f"backend credential at -vvv outside a remote command: {outside}")
    assert outside == []


def test_backend_credential_absent_from_the_vvv_output(vvv, secrets):
    output, _recap = vvv
    assert [(label, task) for label, task, _line in _hits(output, _backend(secrets))] == []


@pytest.fixture(scope="module")
def journal(node, vvv, request):
    """The node's whole journal, every field (export format), read after the -vvv run."""
    raw = node.run("journalctl --no-pager -o export").stdout_bytes
    entries = raw.count(b"\n__CURSOR=") + raw.startswith(b"__CURSOR=")
    oldest = re.search(rb"^__REALTIME_TIMESTAMP=(\d+)$", raw, re.M)
    since = datetime.fromtimestamp(int(oldest.group(1)) / 1e6, timezone.utc).isoformat(timespec="seconds")
    # Podman mounts /var/log/journal as tmpfs in systemd containers: the journal starts at
    # the container's last start (test_site_faults restarts it).
    site.report(request.config, f"journal: {len(raw)} bytes, {entries} entries, oldest {since}")
    assert entries > 100, "the journal must hold the run that was just made"
    return raw


def _in(raw: bytes, secrets: dict[str, str]) -> list[str]:
    return [label for label, value in secrets.items() if value.encode() in raw]


def test_api_keys_absent_from_the_journal(journal, secrets):
    assert _in(journal, _keys(secrets)) == []


def test_backend_credential_absent_from_the_journal(journal, secrets):
    assert _in(journal, _backend(secrets)) == []


def test_credentials_absent_from_the_nginx_logs(node, secrets, request):
    raw = node.run("zcat -f /var/log/nginx/*").stdout_bytes
    files = node.check_output("ls /var/log/nginx").split()
    site.report(request.config, f"nginx logs: {len(raw)} bytes in {files}")
    assert raw, "the access log must hold the requests of the earlier tests"
    assert _in(raw, secrets) == []
