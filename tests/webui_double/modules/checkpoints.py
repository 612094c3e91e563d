"""Checkpoint discovery, hashing (cached like A1111's cache.json) and safetensors loading."""

import hashlib
import json
import os
import sys
import threading
import time
import traceback

from modules import hf_hub

EXTENSIONS = (".safetensors", ".ckpt")


class Checkpoint:
    def __init__(self, path, sha256):
        self.filename = path
        self.model_name = os.path.splitext(os.path.basename(path))[0]
        self.sha256 = sha256
        self.shorthash = sha256[:10]
        self.title = f"{os.path.basename(path)} [{self.shorthash}]"

    def as_api(self):
        return {"title": self.title, "model_name": self.model_name, "hash": self.shorthash,
                "sha256": self.sha256, "filename": self.filename, "config": None}


class HashCache:
    """sha256 of checkpoints keyed by path and mtime, persisted in <data-dir>/cache.json."""

    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, "cache.json")
        self.lock = threading.Lock()

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def sha256(self, path):
        mtime = os.path.getmtime(path)
        with self.lock:
            data = self._read()
            entry = data.get("hashes", {}).get(path)
            if entry and entry.get("mtime") == mtime:
                return entry["sha256"]
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            data.setdefault("hashes", {})[path] = {"mtime": mtime, "sha256": digest.hexdigest()}
            try:
                with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(self.path + ".tmp", self.path)
            except OSError:
                pass  # a read-only data dir costs a re-hash next start, nothing more
            return digest.hexdigest()


def discover(dirs, cache):
    found = {}
    for directory in dirs:
        if not directory or not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(EXTENSIONS) and os.path.isfile(path):
                ckpt = Checkpoint(path, cache.sha256(path))
                found[ckpt.title] = ckpt
    return found


class LoadedModel:
    """What generation needs from the weights: a colour shift and scale derived from them."""

    def __init__(self, checkpoint, tensors):
        import torch

        self.checkpoint = checkpoint
        self.tensor_count = len(tensors)
        floats = [t.float().flatten() for _key, t in sorted(tensors.items()) if t.numel()]
        if not floats:
            raise RuntimeError(f"{checkpoint.filename} holds no tensors")
        means = [float(t.mean()) for t in floats[:3]]
        while len(means) < 3:
            means.append(means[-1])
        self.shift = torch.tensor(means)
        self.scale = max(float(torch.cat([t[:4096] for t in floats]).std()), 0.1)


def display(exc, task):
    """A1111's errors.display: the task, then the traceback, on stderr."""
    print(f"{task}: {type(exc).__name__}", file=sys.stderr)
    print(*traceback.format_exception(type(exc), exc, exc.__traceback__), sep="",
          file=sys.stderr)


def create_model():
    """Read the CLIP tokenizer and text config from the hub cache, as A1111's model creation
    does: it tries once "quickly", reports the failure and retries once before giving up."""
    try:
        return hf_hub.load_clip_text_files()
    except OSError as exc:
        display(exc, "creating model quickly")
    print("Failed to create model quickly; will retry using slow method.", file=sys.stderr)
    return hf_hub.load_clip_text_files()


def load(checkpoint, log, create=True):
    """Load a .safetensors checkpoint with torch; .ckpt (pickle) is refused.

    create: build the model first (A1111's load_model), which reads the CLIP files from the
    hub cache; False when weights replace those of a model already created.
    """
    if not checkpoint.filename.endswith(".safetensors"):
        raise RuntimeError(
            f"refusing to unpickle {checkpoint.filename}: convert it to .safetensors"
        )
    from safetensors.torch import load_file

    log(f"Loading weights [{checkpoint.shorthash}] from {checkpoint.filename}")
    started = time.perf_counter()
    tensors = load_file(checkpoint.filename, device="cpu")
    read = time.perf_counter() - started
    if create:
        try:
            create_model()
        except OSError as exc:
            # A1111's shared.sd_model: the model stays None, the API keeps serving.
            display(exc, "loading stable diffusion model")
            print("", file=sys.stderr)
            print("Stable diffusion model failed to load", file=sys.stderr)
            exc.already_reported = True
            raise
    model = LoadedModel(checkpoint, tensors)
    total = time.perf_counter() - started
    log(f"Model loaded in {total:.1f}s (load weights from disk: {read:.1f}s, "
        f"create model: {total - read:.1f}s).")
    return model
