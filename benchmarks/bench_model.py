"""Measurement 5: model load time, .ckpt vs .safetensors, cold vs warm page cache, and what
the webui role's prewarm (webui_prewarm: an ExecStartPre that reads the default model
into the page cache before the webui maps it) buys: the load right after that command,
against a cold load.

The timing happens inside the converged site container with the torch_env venv's Python
(benchmarks/model_probe.py). The prewarm command is the one the role deployed: read from
the live unit (systemctl cat), pointed at the benchmark's file instead of the default model.
"""

from __future__ import annotations

import json
import shlex

import lib
from lib import Report, ratio

PROBE_DIR = "/var/lib/sdapi/bench-models"
VENV_PYTHON = "/opt/sdapi/venv/bin/python"
UNIT = "sdapi-webui@0.service"


def secs(x: float) -> str:
    """Loads take fractions of a second when warm: two decimals, not lib.secs's one."""
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def prewarm_argv(name: str) -> list[str] | None:
    unit = lib.pexec(name, "systemctl", "cat", UNIT, check=False).stdout
    for line in unit.splitlines():
        if line.startswith("ExecStartPre="):
            # systemd's prefixes: "-" ignore failure, "@", "+", "!", ":" change how it runs.
            argv = shlex.split(line[len("ExecStartPre="):].lstrip("-@+!:"))
            if argv and argv[0].endswith("dd"):
                return [("if={model}" if a.startswith("if=") else a) for a in argv]
    return None


def model(report: Report, name: str) -> None:
    size_mb = 256 if lib.quick() else 2048
    repeat = 1 if lib.quick() else 3
    argv = prewarm_argv(name)
    if argv is None:
        report.fail(f"{UNIT} in {name} has no prewarm ExecStartPre (webui_prewarm: true was set)")
        return
    lib.podman("cp", str(lib.BENCH / "model_probe.py"), f"{name}:/root/model_probe.py")
    lib.say(f"model: {size_mb} MB of random fp16 weights, {repeat} round(s), in {name}")
    out = lib.pexec(name, VENV_PYTHON, "/root/model_probe.py", "--dir", PROBE_DIR, "--size-mb", str(size_mb),
                    "--repeat", str(repeat), "--prewarm", json.dumps(argv), timeout=1800).stdout
    res = json.loads(out.strip().splitlines()[-1])
    med = res["median"]
    if res["resident_after_evict_max_bytes"]:
        report.fail(f"eviction left {res['resident_after_evict_max_bytes']} bytes of a model file resident: "
                    "the cold figures are not cold")
    gb = {fmt: size / 2**30 for fmt, size in res["size_bytes"].items()}
    for fmt in ("safetensors", "ckpt"):
        m = med[fmt]
        report.add("5", f".{fmt} ({gb[fmt]:.2f} GiB) load, cold page cache", secs(m["cold"]),
                   f"warm {secs(m['warm'])}", f"cold/warm {ratio(m['cold'], m['warm'])}")
        report.add("5", f".{fmt} load right after the role's prewarm", secs(m["prewarmed"]),
                   f"cold {secs(m['cold'])}", f"cold/prewarmed {ratio(m['cold'], m['prewarmed'])}")
        # The unit runs the prewarm as ExecStartPre and the webui loads the default model as
        # soon as it starts: at a boot, prewarm + load is what the node waits for.
        both = m["prewarm_cmd"] + m["prewarmed"]
        report.add("5", f".{fmt} start to loaded: prewarm command + load, against a cold load", secs(both),
                   f"cold load {secs(m['cold'])}", f"{ratio(both, m['cold'])}")
    s, c = med["safetensors"], med["ckpt"]
    report.add("5", ".ckpt vs .safetensors, cold / warm", f"{secs(c['cold'])} / {secs(c['warm'])}",
               f"safetensors {secs(s['cold'])} / {secs(s['warm'])}",
               f"{ratio(c['cold'], s['cold'])} / {ratio(c['warm'], s['warm'])}")
    mb = res["size_bytes"]["safetensors"] / 1e6
    report.note("5", f"Prewarm command from the live unit: {' '.join(argv)}; it took "
                     f"{secs(s['prewarm_cmd'])} for the .safetensors ({mb / s['prewarm_cmd']:.0f} MB/s) and "
                     f"{secs(c['prewarm_cmd'])} for the .ckpt. It runs at every start of the unit, right before "
                     "the webui loads that same model, so it moves the disk read in front of the load rather than "
                     "removing it: it pays off only where dd's sequential 16 MB reads beat the loader's own access "
                     "pattern (mmap for safetensors, zip members for torch.load) by more than the warm load costs.")
    report.note("5", f"{res['tensors']} fp16 tensors of log-normally spread sizes, written once "
                     f"({res['write_seconds']:.0f} s); medians of {repeat} round(s) of cold load, prewarm command then "
                     f"load (alternating which comes first), and a warm load, per format; torch threads "
                     f"{res['torch_threads']}. Cold = the file's pages evicted with "
                     "posix_fadvise(DONTNEED) after fsync and checked with fincore (0 bytes resident); "
                     "/proc/sys/vm/drop_caches is read-only in the unprivileged container and would drop the "
                     "host's whole cache, so it is not used. Cold is cold for this kernel: the VM's virtual disk may be "
                     "cached by its own host, which is outside what a benchmark here can evict.")
    raw = {fmt: {k: [round(x, 3) for x in v] for k, v in runs.items()} for fmt, runs in res["runs"].items()}
    report.note("5", "Raw seconds: " + json.dumps(raw))
