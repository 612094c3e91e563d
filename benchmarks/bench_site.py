"""Measurements 1 and 2: a fresh converge of playbooks/site.yml into one Debian 12
container, split by role; the no-op re-run over SSH next to the per-task floor measured
in the same run; the same no-op under the mitogen strategy over SSH and over the podman
connection; and a fresh converge plus re-run under mitogen, asserted to work and to change
nothing the second time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import lib
from lib import Report, ratio, secs

SITE = lib.ROOT / "playbooks" / "site.yml"
NAME = "sdapi-bench-site"
SSH_PORT = 23022
MITOGEN_NAME = "sdapi-bench-mitogen"

CONVERGE_TARGET = 360.0      # seconds, fresh whole-site converge on 2 cores
NOOP_FLOOR_FACTOR = 1.2      # no-op re-run within 1.2x of tasks x per-task floor
MITOGEN_NOOP_TARGET = 25.0   # seconds
ROLE_ORDER = ["facts + validate (play 1)", "base", "kernel_tuning", "torch_env", "webui", "nginx_proxy"]


@dataclass
class Site:
    """The converged site container the other measurements reuse."""
    name: str
    inventory: Path
    converge: lib.PlaybookRun | None


def converge(report: Report, containers: lib.Containers, assets: lib.Assets, reuse: bool) -> Site:
    inventory = lib.write_inventory(lib.WORK / "inventory-site.yml",
                                    {NAME: lib.ssh_hostvars(assets, SSH_PORT)}, lib.node_vars(assets))
    if reuse and lib.running(NAME):
        # Development aid (--reuse-site): the container of a --keep run, already converged
        # with this run's inventory shape. Its key and API key must be this run's too.
        lib.say(f"reusing the running {NAME} (no converge measured)")
        lib.prepare_node(NAME, assets, SSH_PORT)
        containers.names.append(NAME)
        containers.network = True
        rerun = lib.playbook("site-reuse-refresh", SITE, inventory)
        if rerun.rc != 0:
            raise RuntimeError(f"refreshing the reused {NAME} failed: {rerun.log}")
        return Site(NAME, inventory, None)

    started = time.monotonic()
    containers.start(NAME, SSH_PORT)
    lib.prepare_node(NAME, assets, SSH_PORT)
    prep = time.monotonic() - started
    cpu_before = lib.node_cpu_seconds([NAME])
    run = lib.playbook("site-converge", SITE, inventory)
    if run.rc != 0:
        raise RuntimeError(f"the fresh site converge failed (rc={run.rc}); see {run.log}")
    run.timing["node_cpu"] = lib.node_cpu_seconds([NAME]) - cpu_before
    # For the fleet comparison, before later measurements install anything more.
    run.timing["apt_bytes"] = lib.apt_bytes(NAME)
    run.timing["wheel_key"] = lib.wheel_key(NAME)
    roles = run.by_role()
    report.add("1", "fresh converge of playbooks/site.yml, 1 Debian 12 container, SSH + pipelining, "
               "linear strategy", secs(run.wall), "", "", f"< {CONVERGE_TARGET:.0f} s",
               run.wall < CONVERGE_TARGET)
    for role in ROLE_ORDER + sorted(set(roles) - set(ROLE_ORDER)):
        if role in roles:
            report.add("1", f"  of which {role}", secs(roles[role]), "", f"{roles[role] / run.span():.0%}")
    c = run.counts(NAME)
    report.note("1", f"Container start, systemd boot, sshd and the double's publication (not in the "
                     f"converge time): {prep:.1f} s. Converge: {c['executed']} tasks ran, {c['skipped']} "
                     f"skipped, {c['changed']} changed; ansible-playbook start-up and the recap: "
                     f"{run.wall - run.span():.1f} s of the {run.wall:.1f} s.")
    report.note("1", "Slowest tasks of the fresh converge: " + "; ".join(
        f"{name} {sec:.1f} s" for sec, name in run.slowest(6)))
    top = lib.pexec(NAME, "sh", "-c", "cd /var/cache/apt/archives && ls -S *.deb | head -8", check=False).stdout.split()
    report.note("1", f"apt fetched {run.timing['apt_bytes'] / 1e6:.0f} MB of .debs into the node (largest: "
                     f"{', '.join(d.split('_')[0] for d in top)}).")
    return Site(NAME, inventory, run)


def noop(report: Report, site: Site, assets: lib.Assets) -> None:
    n = 20 if lib.quick() else 100
    # ansible.builtin.ping: the lightest module that still makes the whole trip a site task
    # makes (worker fork, AnsiballZ payload, SSH/pipelining, the node's Python start-up,
    # JSON back); debug and set_fact never leave the controller and would flatter the floor.
    floor_book = lib.floor_playbook(n)

    plain = lib.playbook("noop-ssh", SITE, site.inventory)
    floor = lib.playbook("floor-ssh", floor_book, site.inventory)
    if plain.rc != 0 or floor.rc != 0:
        report.fail(f"no-op re-run or floor play failed (rc {plain.rc}/{floor.rc}); see {plain.log}")
        return
    per_task = floor.span() / n
    c = plain.counts(site.name)
    expected = c["executed"] * per_task
    report.add("2", "no-op re-run over SSH (pipelining, linear): time; tasks ran / skipped; changed",
               f"{secs(plain.wall)}; {c['executed']} / {c['skipped']}; {c['changed']} changed",
               f"{c['executed']} tasks x floor {per_task * 1000:.0f} ms = {secs(expected)}",
               ratio(plain.span(), expected), f"<= {NOOP_FLOOR_FACTOR}x, 0 changed",
               plain.span() <= NOOP_FLOOR_FACTOR * expected and c["changed"] == 0)
    by_exec = c["executions"] * per_task
    report.add("2", "  same, counting loop items (module executions)",
               f"{c['executions']} executions", f"x floor = {secs(by_exec)}", ratio(plain.span(), by_exec))
    report.note("2", f"Per-task floor: a play of {n} separate ansible.builtin.ping tasks (the lightest module "
                     f"that still crosses the connection: worker fork, AnsiballZ payload, SSH with pipelining, "
                     f"the node's Python, JSON back) with the same inventory, {floor.span():.1f} s from the first "
                     f"task to the recap ({floor.wall:.1f} s with ansible-playbook's start-up). The ratios compare "
                     f"task spans (first task to recap); the no-op's wall time adds "
                     f"{plain.wall - plain.span():.1f} s of start-up.")
    if c["changed"]:
        report.note("2", "Changed in the no-op re-run: " + "; ".join(plain.changed_tasks()))
    skipped = sum(t["end"] - t["start"] for t in plain.tasks
                  if t["hosts"] and all(r["status"] == "skipped" for r in t["hosts"].values()))
    report.note("2", f"Where the no-op re-run over SSH spends more than floor x executions "
                     f"({plain.span() - by_exec:.1f} s in all; {c['skipped']} skipped tasks cost {skipped:.1f} s): "
                     + "; ".join(f"{name} {dur:.2f} s for {k} execution(s), +{extra:.2f} s"
                                 for extra, dur, k, name in plain.above_floor(per_task, 10)))
    roles = plain.by_role()
    report.note("2", "No-op re-run by role: " + "; ".join(
        f"{r} {roles[r]:.1f} s" for r in ROLE_ORDER if r in roles))

    # The same no-op under mitogen, over SSH (mitogen_ssh) and over the podman connection
    # (mitogen_podman). The inventory differs only in the connection of the one host.
    podman_inv = lib.write_inventory(lib.WORK / "inventory-site-podman.yml",
                                     {site.name: lib.podman_hostvars(site.name)}, lib.node_vars(assets))
    for label, inventory in (("SSH", site.inventory), ("podman connection", podman_inv)):
        tag = "ssh" if label == "SSH" else "podman"
        run = lib.playbook(f"noop-mitogen-{tag}", SITE, inventory, strategy="mitogen")
        mfloor = lib.playbook(f"floor-mitogen-{tag}", floor_book, inventory, strategy="mitogen")
        mc = run.counts(site.name)
        ok = run.rc == 0 and mc["changed"] == 0
        if not ok:
            report.fail(f"no-op re-run under mitogen over {label}: rc={run.rc}, changed={mc['changed']} "
                        f"({'; '.join(run.changed_tasks())}); see {run.log}")
        report.add("2", f"no-op re-run, mitogen_linear over {label}: time; tasks; changed",
                   f"{secs(run.wall)}; {mc['executed']} / {mc['skipped']}; {mc['changed']} changed",
                   f"linear over SSH {secs(plain.wall)}", ratio(run.wall, plain.wall),
                   f"< {MITOGEN_NOOP_TARGET:.0f} s, 0 changed", ok and run.wall < MITOGEN_NOOP_TARGET)
        if mfloor.rc == 0:
            report.note("2", f"mitogen over {label}: per-task floor {mfloor.span() / n * 1000:.0f} ms "
                             f"({n} x ansible.builtin.ping); no-op slowest: " + "; ".join(
                                 f"{name} {sec:.2f} s" for sec, name in run.slowest(5)))


def mitogen_converge(report: Report, containers: lib.Containers, assets: lib.Assets,
                     plain: lib.PlaybookRun | None) -> None:
    """A fresh container converged under mitogen (over the podman connection, the way a CI
    could use it with Molecule's podman driver), then the same playbook again: both must
    succeed and the second must change nothing. Fails the benchmark loudly otherwise.

    When the fresh converge fails, the same playbook runs once more on the same container
    to tell a first-run-only failure (e.g. a module that respawns itself, which mitogen's
    in-process module execution does not support) from one that never converges; the
    assertion has failed either way."""
    containers.start(MITOGEN_NAME, None)
    lib.prepare_node(MITOGEN_NAME, assets, None)
    inventory = lib.write_inventory(lib.WORK / "inventory-mitogen.yml",
                                    {MITOGEN_NAME: lib.podman_hostvars(MITOGEN_NAME)}, lib.node_vars(assets))
    peer = f"linear over SSH {secs(plain.wall)}" if plain else ""
    first = lib.playbook("mitogen-converge", SITE, inventory, strategy="mitogen")
    converged = first
    if first.rc != 0:
        failed = [f"{t['role'] or '-'}: {t['name']}" for t in first.tasks
                  for r in t["hosts"].values() if r["status"] == "failed"]
        reason = _first_error(first.log)
        report.fail(f"fresh converge under mitogen failed (rc={first.rc}) at {'; '.join(failed) or '?'}: "
                    f"{reason}; see {first.log}")
        report.add("2", "fresh converge under mitogen_linear (podman connection)",
                   f"FAILED after {secs(first.wall)} at {'; '.join(failed) or '?'}", peer, "", "works", False)
        converged = lib.playbook("mitogen-converge-retry", SITE, inventory, strategy="mitogen")
        report.add("2", "  the same converge again on that container (what a fresh converge leaves to do)",
                   f"{'rc 0' if converged.rc == 0 else 'FAILED'} in {secs(converged.wall)}", peer,
                   ratio(converged.wall, plain.wall) if plain and converged.rc == 0 else "")
        if "python3-apt" in reason:
            report.note("2", "Under mitogen the first apt task on a host without python3-apt fails. "
                             "ansible.builtin.apt installs python3-apt (the log's 'auto-installing missing "
                             "dependency' warning), then looks for an interpreter that can run `import apt, "
                             "ansible.module_utils.basic` with PYTHONPATH set to where ansible's module_utils lie "
                             "on the node's disk, to respawn itself there (module_utils/common/respawn.py). Under "
                             "mitogen the module_utils are served from memory, not unpacked on disk, so no "
                             "interpreter qualifies and the module gives up; respawning under mitogen is a known "
                             "gap (mitogen-hq/mitogen#849). The plain strategy converges the same fresh "
                             "container; under mitogen the next run passes, python3-apt being installed by then. "
                             "A role-side fix: make sure python3-apt is present (e.g. an apt-get command guarded "
                             "by creates: /usr/lib/python3/dist-packages/apt) before the first apt task, or "
                             "install it in the image/prepare step.")
        if converged.rc != 0:
            containers.remove(MITOGEN_NAME)
            return
    second = lib.playbook("mitogen-idempotence", SITE, inventory, strategy="mitogen")
    changed = second.counts(MITOGEN_NAME)["changed"]
    ok = second.rc == 0 and changed == 0
    if not ok:
        report.fail(f"site not idempotent under mitogen: rc={second.rc}, changed={changed}: "
                    f"{'; '.join(second.changed_tasks())}; see {second.log}")
    if converged is first:
        report.add("2", "fresh converge under mitogen_linear (podman connection)", secs(first.wall), peer,
                   ratio(first.wall, plain.wall) if plain else "", "works", True)
    report.add("2", "  re-run under mitogen_linear after that converge: time; changed",
               f"{secs(second.wall)}; {changed} changed", "", "", "0 changed", ok)
    roles = converged.by_role()
    report.note("2", "Converge under mitogen by role: " + "; ".join(
        f"{r} {roles[r]:.1f} s" for r in ROLE_ORDER if r in roles))
    containers.remove(MITOGEN_NAME)


def _first_error(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("fatal:") or line.startswith("[ERROR]"):
            m = re.search(r'"msg": "([^"]+)', line)
            return (m.group(1) if m else line)[:400]
    return "no error line in the log"
