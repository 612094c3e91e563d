"""Measurement 3: the site converged on 1 node vs on a fleet of 3 nodes in one run of the
same plays (each an independent single-host node: webui and proxy on itself).

torch_env's wheelhouse mode downloads the wheel set once per key on the controller and
pushes the same tar to every node, so a fleet should cost far less than N converges. What
each case moved is read from the run itself: on how many hosts pip download ran (the
Download task changed) and how many received the tar (the Unpack task changed).

By default both cases reuse the controller's existing wheelhouse (.cache/wheelhouse, as the
site benchmark does): no download runs in either. SDAPI_BENCH_FRESH_WHEELHOUSE=1 gives each
case an empty wheelhouse directory of its own, so the download is part of both (it needs
the controller's pip index, i.e. PyPI and the local find-links, and ~220 MB of disk).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lib
from lib import Report, ratio, secs

SITE = lib.ROOT / "playbooks" / "site.yml"
FIRST_PORT = 23031
FLEET_TARGET = 1.5
DOWNLOAD = "Download every wheel of the set on the controller"
UNPACK = "Unpack the wheelhouse on the node"


def _names(n: int, tag: str) -> list[str]:
    return [f"{lib.PREFIX}fleet{tag}{i + 1}" for i in range(n)]


def _wheel_facts(run: lib.PlaybookRun, wheelhouse: Path, key: str) -> dict:
    def hosts_with(name: str, status: str) -> int:
        return sum(r["status"] == status for t in run.task_spans(name) for r in t["hosts"].values())

    tar = wheelhouse / f"{key}.tar" if key and (wheelhouse / f"{key}.tar").exists() else None
    return {
        "downloads": hosts_with(DOWNLOAD, "changed"),
        "pushes": hosts_with(UNPACK, "changed"),
        "tar_bytes": tar.stat().st_size if tar else 0,
        "dir_bytes": sum(p.stat().st_size for p in tar.with_suffix("").iterdir()) if tar else 0,
        "download_seconds": sum(t["end"] - t["start"] for t in run.task_spans(DOWNLOAD)),
        "unpack_seconds": sum(t["end"] - t["start"] for t in run.task_spans(UNPACK)),
    }


def _converge(containers: lib.Containers, assets: lib.Assets, names: list[str], label: str,
              wheelhouse: Path) -> tuple[lib.PlaybookRun, str]:
    hosts = {}
    for i, name in enumerate(names):
        port = FIRST_PORT + i
        containers.start(name, port)
        lib.prepare_node(name, assets, port)
        hosts[name] = lib.ssh_hostvars(assets, port)
    group = lib.node_vars(assets)
    group["torch_env_wheelhouse_dir"] = str(wheelhouse)
    inventory = lib.write_inventory(lib.WORK / f"inventory-{label}.yml", hosts, group)
    cpu_before = lib.node_cpu_seconds(names)
    run = lib.playbook(label, SITE, inventory)
    run.timing["node_cpu"] = lib.node_cpu_seconds(names) - cpu_before
    key = lib.wheel_key(names[0])
    run.timing["apt_bytes"] = sum(lib.apt_bytes(name) for name in names)
    for name in names:
        containers.remove(name)
    return run, key


def fleet(report: Report, containers: lib.Containers, assets: lib.Assets,
          single: lib.PlaybookRun | None) -> None:
    n = int(os.environ.get("SDAPI_BENCH_FLEET_HOSTS", "2" if lib.quick() else "3"))
    fresh = os.environ.get("SDAPI_BENCH_FRESH_WHEELHOUSE", "") not in ("", "0")

    def wheelhouse_for(tag: str) -> Path:
        if not fresh:
            return lib.WHEELHOUSE
        path = lib.WORK / f"wheelhouse-{tag}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    if single is None or fresh:
        wh1 = wheelhouse_for("1")
        single, single_key = _converge(containers, assets, _names(1, "a"), "fleet-1-converge", wh1)
        single_label = "1 node (own converge)"
    else:
        wh1 = lib.WHEELHOUSE
        single_key = single.timing.get("wheel_key", "")
        single_label = "1 node (measurement 1's converge)"
    whn = wheelhouse_for(str(n))
    many, many_key = _converge(containers, assets, _names(n, "b"), f"fleet-{n}-converge", whn)
    if single.rc != 0 or many.rc != 0:
        report.fail(f"fleet converge failed (1 node rc={single.rc}, {n} nodes rc={many.rc}); see {many.log}")
        return

    single_apt = single.timing.get("apt_bytes", 0)
    one, lots = _wheel_facts(single, wh1, single_key), _wheel_facts(many, whn, many_key)
    r = many.wall / single.wall
    report.add("3", f"converge of {n} nodes in one run vs 1 node (site.yml, SSH, linear, forks 5)",
               secs(many.wall), f"{single_label} {secs(single.wall)}", f"{r:.2f}x", f"< {FLEET_TARGET}x",
               r < FLEET_TARGET)
    for label, facts, count in (("1 node", one, 1), (f"{n} nodes", lots, n)):
        mb = facts["tar_bytes"] / 1e6
        report.add("3", f"  wheelhouse, {label}: pip download ran on / tar pushed to",
                   f"{facts['downloads']} of {count} hosts / {facts['pushes']} of {count} hosts",
                   f"downloaded {facts['dir_bytes'] / 1e6 if facts['downloads'] else 0:.0f} MB, "
                   f"pushed {facts['pushes']} x {mb:.0f} MB = {facts['pushes'] * mb:.0f} MB",
                   "", "at most 1 download per key", facts["downloads"] <= 1)
    roles_1, roles_n = single.by_role(), many.by_role()
    for role in [k for k in roles_n if k in roles_1]:
        report.note("3", f"{role}: 1 node {roles_1[role]:.1f} s, {n} nodes {roles_n[role]:.1f} s "
                         f"({ratio(roles_n[role], roles_1[role])})")
    source = ("a fresh, empty directory per case" if fresh else
              f"reused {lib.WHEELHOUSE.relative_to(lib.ROOT)} (its tar exists, so creates: skips the download)")
    report.note("3", f"Wheelhouse: {source}; "
                     f"download task {one['download_seconds']:.1f} s (1 node) vs {lots['download_seconds']:.1f} s "
                     f"({n} nodes), push+unpack {one['unpack_seconds']:.1f} s vs {lots['unpack_seconds']:.1f} s.")
    report.add("3", "  .debs each node fetched itself from the Debian mirror (apt archive cache)",
               f"{n} nodes: {many.timing.get('apt_bytes', 0) / 1e6:.0f} MB", f"1 node: {single_apt / 1e6:.0f} MB",
               ratio(many.timing.get("apt_bytes", 0), single_apt))
    # The nodes here are containers on the controller's own cores: the CPU the whole run
    # needs, spread over every core, is a floor no schedule can beat.
    cores = os.cpu_count() or 1
    cpu = {label: (run.timing.get("controller_cpu", 0.0), run.timing.get("node_cpu", 0.0))
           for label, run in (("1", single), ("n", many))}
    floor = sum(cpu["n"]) / cores
    report.add("3", f"  CPU used, controller + nodes: {n} nodes / 1 node",
               f"{sum(cpu['n']):.0f} s ({cpu['n'][0]:.0f} + {cpu['n'][1]:.0f})",
               f"1 node: {sum(cpu['1']):.0f} s ({cpu['1'][0]:.0f} + {cpu['1'][1]:.0f})",
               ratio(sum(cpu["n"]), sum(cpu["1"])))
    report.add("3", f"  floor for {n} nodes on this machine's {cores} cores (CPU used / cores), against 1 node's converge",
               secs(floor), f"1 node {secs(single.wall)}", f"{floor / single.wall:.2f}x")
    report.note("3", f"Every node of this fleet is a container on the controller's {cores} cores, so the fleet's "
                     f"CPU time, not its download, bounds it: {sum(cpu['n']):.0f} CPU-s over {cores} cores cannot "
                     f"take less than {floor:.1f} s ({floor / single.wall:.2f}x the 1-node converge). On real "
                     f"hosts each node brings its own cores and only the controller's share "
                     f"({cpu['n'][0]:.0f} CPU-s for {n} nodes against {cpu['1'][0]:.0f} for 1) is shared.")
    report.note("3", f"Slowest tasks with {n} nodes: " + "; ".join(
        f"{name} {sec:.1f} s" for sec, name in many.slowest(6)))
    if fresh:
        for path in (wh1, whn):
            if path != lib.WHEELHOUSE:
                shutil.rmtree(path, ignore_errors=True)
