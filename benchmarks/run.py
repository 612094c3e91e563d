"""`make bench`: runs every benchmark in one go, prints the table and writes it, with the
machine it ran on, to benchmarks/RESULTS.md.

Usage: .venv/bin/python benchmarks/run.py [PHASE ...] [--keep] [--reuse-site] [--out FILE]
  PHASE    site noop proxy model fleet mitogen (default: all, in that order). noop, proxy
           and model measure the site container that `site` converged.
  --keep   leave this run's containers and network in place (for debugging)
  --reuse-site  take a running sdapi-bench-site from a --keep run instead of converging
  SDAPI_BENCH_QUICK=1  reduced sizes for development (see README.md)

A run with every phase writes benchmarks/RESULTS.md; a run of some phases writes
.cache/bench/RESULTS-partial.md, so a debugging run never replaces the full table.
Exits 1 when an assertion failed (e.g. the site changed something under mitogen).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fleet  # noqa: E402 - after the path set-up above
import bench_model  # noqa: E402
import bench_proxy  # noqa: E402
import bench_site  # noqa: E402
import lib  # noqa: E402

PHASES = ["site", "noop", "proxy", "model", "fleet", "mitogen"]


def _sigterm(_signum, _frame):
    # Turn a polite kill into an exception so the finally below removes the containers.
    raise SystemExit(143)


def render(report: lib.Report, info: dict, phases: list[str], started: float, load_start: str,
           others: int) -> str:
    mode = "quick (SDAPI_BENCH_QUICK=1: reduced sizes)" if report.quick else "full"
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`benchmarks/run.py`, {mode}); phases: {', '.join(phases)}. "
        "What each figure measures and how: [README.md](README.md). Every ratio compares two figures "
        "measured side by side in this one run.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += [
        f"| load average at start / end | {load_start} / {lib.load_average()} |",
        f"| other containers running at start | {others} (colleagues' Molecule scenarios share the 2 cores) |",
        f"| whole run | {(time.monotonic() - started) / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report.phase_seconds.items())}) |",
        "",
        "## Results",
        "",
        report.table().rstrip(),
        "",
    ]
    if report.failures:
        lines += ["## FAILED assertions", ""] + [f"- {f}" for f in report.failures] + [""]
    lines += ["## Details", ""]
    titles = {"1": "1. Fresh converge", "2": "2. No-op re-run and mitogen", "3": "3. Fleet",
              "4": "4. Proxy overhead", "5": "5. Model load"}
    for key, title in titles.items():
        if key in report.notes:
            lines += [f"### {title}", ""] + [f"- {n}" for n in report.notes[key]] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phases", nargs="*", metavar="PHASE", help=" ".join(PHASES))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse-site", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {' '.join(PHASES)}")
    phases = [p for p in PHASES if p in args.phases] or list(PHASES)
    everything = phases == PHASES
    out = Path(args.out) if args.out else (lib.BENCH / "RESULTS.md" if everything
                                           else lib.WORK / "RESULTS-partial.md")

    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    load_start, others = lib.load_average(), lib.other_containers()
    info = lib.machine()
    report = lib.Report(quick=lib.quick())
    containers = lib.Containers(keep=args.keep)
    lib.say(f"benchmarks ({'quick' if report.quick else 'full'}): {', '.join(phases)}; load {load_start}, "
            f"{others} other containers running")

    def timed(phase: str, fn, *fn_args):
        t0 = time.monotonic()
        try:
            return fn(*fn_args)
        finally:
            report.phase_seconds[phase] = time.monotonic() - t0

    crashed = None
    try:
        assets = lib.make_assets()
        needs_site = any(p in phases for p in ("site", "noop", "proxy", "model"))
        site = None
        if needs_site:
            site = timed("site", bench_site.converge, report, containers, assets,
                         args.reuse_site)
        if "noop" in phases:
            timed("noop", bench_site.noop, report, site, assets)
        if "proxy" in phases:
            timed("proxy", bench_proxy.proxy, report, site.name, assets)
        if "model" in phases:
            timed("model", bench_model.model, report, site.name)
        single = site.converge if site else None
        if site and not args.keep:
            # Its measurements are done: free its memory and CPU for the fleet.
            containers.remove(site.name)
        if "fleet" in phases:
            timed("fleet", bench_fleet.fleet, report, containers, assets, single)
        if "mitogen" in phases:
            timed("mitogen", bench_site.mitogen_converge, report, containers, assets, single)
    except BaseException as exc:  # noqa: BLE001 - reported in the table, then re-raised below
        crashed = exc
        report.fail(f"benchmark stopped: {type(exc).__name__}: {exc}")
    finally:
        containers.close()

    text = render(report, info, phases, started, load_start, others)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    lib.say(f"written to {out}")
    if isinstance(crashed, KeyboardInterrupt):
        return 130
    if isinstance(crashed, SystemExit) and isinstance(crashed.code, int):
        return crashed.code
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
