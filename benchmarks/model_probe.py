"""Runs INSIDE a converged node with the torch_env venv's Python (benchmarks/bench_model.py
copies it in): writes the same random weights as .safetensors and .ckpt, then times loading
each with a cold page cache, a warm one, and after the webui role's prewarm command.

Cold means the file's pages were evicted with posix_fadvise(POSIX_FADV_DONTNEED) after an
fsync: file-scoped and harmless to the host, unlike writing /proc/sys/vm/drop_caches (which
needs a privileged container and would drop the whole host's cache). fincore checks that
no page of the file stayed resident. "Loaded" means every page of every tensor was touched,
so a lazily mapped load (safetensors mmaps) is not credited with reads it did not do.

Prints one JSON object on stdout.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import time

import torch
from safetensors.torch import load_file, save_file

PAGE = 4096


def make_weights(total_bytes, count, seed):
    """About `count` fp16 tensors adding up to `total_bytes`, sizes spread like a real
    checkpoint's (a few big attention and conv weights, many small norms and biases)."""
    gen = torch.Generator().manual_seed(seed)
    shares = torch.empty(count).log_normal_(0.0, 2.0, generator=gen)
    shares = shares / shares.sum()
    weights = {}
    for i, share in enumerate(shares.tolist()):
        numel = max(1, int(share * total_bytes / 2))
        weights[f"model.diffusion_model.block{i:04d}.weight"] = torch.randn(numel, generator=gen).half()
    return weights


def resident_bytes(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(out or 0)


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident_bytes(path)


def touch(tensors):
    total = 0
    for tensor in tensors.values():
        flat = tensor.reshape(-1).view(torch.uint8)
        total += int(flat[::PAGE].sum())
    return total


def load(path):
    started = time.perf_counter()
    if path.endswith(".safetensors"):
        tensors = load_file(path, device="cpu")
    else:
        # What A1111 does with a .ckpt (the role converts them at deploy time for the same
        # reason: a pickle executes code unless weights_only).
        tensors = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    touch(tensors)
    seconds = time.perf_counter() - started
    del tensors
    gc.collect()
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--size-mb", type=int, required=True)
    parser.add_argument("--tensors", type=int, default=1100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--prewarm", required=True, help="JSON argv; {model} is the file to prewarm")
    args = parser.parse_args()
    prewarm = json.loads(args.prewarm)

    os.makedirs(args.dir, exist_ok=True)
    paths = {"safetensors": os.path.join(args.dir, "bench.safetensors"),
             "ckpt": os.path.join(args.dir, "bench.ckpt")}
    started = time.perf_counter()
    weights = make_weights(args.size_mb * 1024 * 1024, args.tensors, seed=1234)
    save_file(weights, paths["safetensors"])
    torch.save({"state_dict": weights}, paths["ckpt"])
    del weights
    gc.collect()
    made = time.perf_counter() - started

    result = {"size_bytes": {k: os.path.getsize(p) for k, p in paths.items()}, "write_seconds": made,
              "tensors": args.tensors, "torch_threads": torch.get_num_threads(),
              "prewarm_argv": prewarm, "runs": {}}
    leftover = []
    try:
        for rnd in range(args.repeat):
            for fmt, path in paths.items():
                runs = result["runs"].setdefault(fmt, {"cold": [], "warm": [], "prewarmed": [], "prewarm_cmd": []})
                # Cold first in even rounds, prewarm first in odd ones: whatever the first read
                # of a round gains from caches below this kernel (the VM's disk), both get it.
                for step in (("cold", "prewarm") if rnd % 2 == 0 else ("prewarm", "cold")):
                    leftover.append(evict(path))
                    if step == "cold":
                        runs["cold"].append(load(path))
                    else:
                        argv = [a.replace("{model}", path) for a in prewarm]
                        t0 = time.perf_counter()
                        subprocess.run(argv, check=True)
                        runs["prewarm_cmd"].append(time.perf_counter() - t0)
                        runs["prewarmed"].append(load(path))
                runs["warm"].append(load(path))
    finally:
        for path in paths.values():
            os.unlink(path)
    result["resident_after_evict_max_bytes"] = max(leftover) if leftover else 0
    result["median"] = {fmt: {k: statistics.median(v) for k, v in runs.items()}
                        for fmt, runs in result["runs"].items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
