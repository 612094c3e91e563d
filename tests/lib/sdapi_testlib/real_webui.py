"""Lays out what the real-webui scenario serves to its node, from ../shared/fixtures.

The node gets A1111 v1.10.1 the way an air-gapped operator would give it: bare git mirrors,
the two zips prepare_environment() installs, a Hugging Face mirror in the hub's own URL
layout (<mirror>/<repo>/resolve/<revision>/<file>) and checksummed checkpoints behind file
URLs. The scenario bind-mounts the result read-only at /srv/real-webui.

Everything is checked against the fixture's SHA256SUMS before use and made once: a re-run
finds it in place and only reports the sums. The checkpoints come from sd15_checkpoint.py
(random weights, seeded); the second one is the first with other safetensors metadata, a
distinct file (own sha256, own A1111 hash) at the cost of one copy, for "a model added to
the inventory is usable without a restart".

Usage: real_webui.py [--fixtures DIR] [--out DIR]   prints one JSON line of sums and paths
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this file's folder would come first on the import path, and its
    # http.py would shadow the standard library's; its package is imported by name instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from sdapi_testlib.double import hub_snapshots  # noqa: E402  pylint: disable=wrong-import-position
from sdapi_testlib.sd15_checkpoint import sha256_of  # noqa: E402  pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "a1111-v1.10.1"
OUT = ROOT / ".cache" / "real-webui"
DOUBLE_PYTHON = ROOT / ".cache" / "double-venv" / "bin" / "python"
# The repository whose files the fixture holds. The mirror serves them under the revision
# the role's defaults pin, so the role's default webui_hf_snapshots is what the test uses.
HF_REPO = "openai/clip-vit-large-patch14"
CHECKPOINT = "sd15-random.safetensors"
VARIANT = "sd15-random-b.safetensors"


def check_fixtures(fixtures: Path) -> None:
    """Stop on a fixture file whose sum is not the one SHA256SUMS records."""
    for line in (fixtures / "SHA256SUMS").read_text().splitlines():
        want, name = line.split(maxsplit=1)
        if sha256_of(fixtures / name) != want:
            raise SystemExit(f"fixture {name} does not match SHA256SUMS")


def unpack_repos(fixtures: Path, out: Path) -> None:
    (out / "repos").mkdir(parents=True, exist_ok=True)
    for archive in sorted((fixtures / "repos").glob("*.git.tar.gz")):
        name = archive.name[: -len(".tar.gz")]
        if (out / "repos" / name / "HEAD").exists():
            continue
        partial = out / "repos" / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        (partial / name).rename(out / "repos" / name)
        partial.rmdir()


def copy_packages_and_hub(fixtures: Path, out: Path) -> str:
    """The zips, and the hub files under the role's pinned revision (returned)."""
    (out / "packages").mkdir(parents=True, exist_ok=True)
    for package in (fixtures / "packages").glob("*.zip"):
        if not (out / "packages" / package.name).exists():
            shutil.copyfile(package, out / "packages" / package.name)
    snapshot = next(s for s in hub_snapshots() if s["repo"] == HF_REPO)
    hub = out / "hf-mirror" / HF_REPO / "resolve" / snapshot["revision"]
    hub.mkdir(parents=True, exist_ok=True)
    for name in snapshot["files"]:
        if not (hub / name).exists():
            shutil.copyfile(fixtures / "hf" / HF_REPO.replace("/", "--") / name, hub / name)
    return snapshot["revision"]


def make_checkpoint(out: Path) -> None:
    target = out / CHECKPOINT
    subprocess.run([str(DOUBLE_PYTHON), str(Path(__file__).with_name("sd15_checkpoint.py")),
                    "--out", str(target)], check=True, stdout=sys.stderr)


def write_variant(source: Path, target: Path, label: str) -> None:
    """The same tensors under another safetensors header: only the metadata differs, so
    the tensor offsets (relative to the data that follows the header) stay valid."""
    if target.exists() and (target.with_name(target.name + ".sha256")).exists():
        return
    with source.open("rb") as src:
        (size,) = struct.unpack("<Q", src.read(8))
        header = json.loads(src.read(size))
        header["__metadata__"] = dict(header.get("__metadata__", {}), sdapi_test_variant=label)
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep the data aligned, as safetensors writes it
        partial = target.with_name(f".{target.name}.partial")
        with partial.open("wb") as dst:
            dst.write(struct.pack("<Q", len(raw)) + raw)
            shutil.copyfileobj(src, dst, 16 << 20)
    partial.rename(target)
    target.with_name(target.name + ".sha256").write_text(sha256_of(target) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    check_fixtures(args.fixtures)
    unpack_repos(args.fixtures, args.out)
    revision = copy_packages_and_hub(args.fixtures, args.out)
    make_checkpoint(args.out)
    write_variant(args.out / CHECKPOINT, args.out / VARIANT, "b")
    # Readable by the node's root through the bind mount, whatever the controller's umask.
    for path in [args.out, *args.out.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    sums = {name: (args.out / f"{name}.sha256").read_text().split()[0] for name in (CHECKPOINT, VARIANT)}
    print(json.dumps({"seconds": round(time.monotonic() - started, 1), "sha256": sums,
                      "hf_revision": revision}))


if __name__ == "__main__":
    main()
