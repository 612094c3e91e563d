"""Publishes the webui TEST DOUBLE (tests/webui_double) the way a node sees A1111.

One recipe for every place that needs it (molecule/shared/publish-double.yml, scripts/demo.py,
benchmarks/lib.py):
- a bare git repository whose tags are releases: v1 is the double as it is; every other
  release is a child commit of v1 on a branch of its own, so v1 never moves;
- small random checkpoints with fixed seeds, as .safetensors or as a pickled .ckpt;
- a Hugging Face mirror (the hub's URL layout) with STAND-IN files for every file the
  webui role's default webui_hf_snapshots names: the double reads them at model load the
  way A1111 reads the CLIP tokenizer, so the role's hub placement is tested with the double.

Command line (the checkpoint verb needs torch and safetensors: run it with the double's
virtualenv, .cache/double-venv):
    double.py repo DEST [RELEASE ...]          prints "added: <tags>" or "present"
    double.py checkpoint PATH --seed N [--size N]   writes PATH (.safetensors or .ckpt), prints its sha256
    double.py hub DEST                         writes DEST/<repo>/resolve/<revision>/<file>
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this file's folder would come first on the import path, and its
    # http.py would shadow the standard library's (which torch imports).
    del sys.path[0]

SOURCE = Path(__file__).resolve().parents[2] / "webui_double"
WEBUI_DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "webui" / "defaults" / "main.yml"
# torch and safetensors for the checkpoints: the double's own virtualenv (scripts/setup-host.sh).
DOUBLE_PYTHON = Path(__file__).resolve().parents[3] / ".cache" / "double-venv" / "bin" / "python"

BROKEN_LINE = '\nraise SystemExit("this release is broken on purpose")\n'
# Each release's commit message; what it changes on top of v1 is in _change().
RELEASES = {
    "v1": "the webui test double",
    "v2": "double v2: reports version v2-double",
    "broken": "double broken: launch exits at start",
}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=sdapi-tests", "-c",
                           "user.email=sdapi-tests@localhost", *args],
                          check=True, capture_output=True, text=True).stdout


def _change(work: Path, release: str) -> None:
    if release == "v2":
        launch = work / "launch.py"
        lines = launch.read_text().splitlines(keepends=True)
        launch.write_text("".join('VERSION = "v2-double"\n' if line.startswith("VERSION = ") else line
                                  for line in lines))
    elif release == "broken":
        with open(work / "modules" / "cmd_args.py", "a", encoding="utf-8") as fh:
            fh.write(BROKEN_LINE)
    else:
        raise ValueError(f"unknown release {release!r}; known: {sorted(RELEASES)}")


def publish_repo(dest: Path, releases: list[str]) -> list[str]:
    """Makes dest (a bare repository) hold v1 and the given releases; returns the tags added.
    An existing repository only gets the tags it lacks."""
    added = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "src"
        if not dest.exists():
            shutil.copytree(SOURCE, work, ignore=shutil.ignore_patterns("__pycache__"))
            _git(work, "init", "-q", "-b", "main")
            _git(work, "add", "-A")
            _git(work, "commit", "-qm", RELEASES["v1"])
            _git(work, "tag", "v1")
            subprocess.run(["git", "clone", "-q", "--bare", str(work), str(dest)], check=True)
            shutil.rmtree(work)
            added.append("v1")
        have = set(_git(dest, "tag", "--list").split())
        missing = [r for r in releases if r not in have]
        if missing:
            subprocess.run(["git", "clone", "-q", str(dest), str(work)], check=True)
        for release in missing:
            _git(work, "checkout", "-q", "-b", release, "v1")
            _change(work, release)
            _git(work, "commit", "-qam", RELEASES[release])
            _git(work, "tag", release)
            _git(work, "push", "-q", "origin", f"refs/tags/{release}")
            added.append(release)
    return added


def write_checkpoint(path: Path, seed: int, size: int = 128) -> str:
    """Random weights {w: size x size, b: size} from seed; a .ckpt is pickled the way old
    checkpoints are ({"state_dict": ...}). Returns the file's sha256."""
    import torch  # pylint: disable=import-outside-toplevel,import-error

    generator = torch.Generator().manual_seed(seed)
    weights = {"w": torch.randn(size, size, generator=generator), "b": torch.rand(size, generator=generator)}
    if path.suffix == ".ckpt":
        torch.save({"state_dict": weights}, path)
    else:
        from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel,import-error

        save_file(weights, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_checkpoint(path: Path, seed: int, size: int = 128) -> str:
    """write_checkpoint() run by the double's virtualenv, for callers without torch. Keeps an
    existing file. Returns the file's sha256."""
    if not path.exists():
        subprocess.run([str(DOUBLE_PYTHON), __file__, "checkpoint", str(path), "--seed", str(seed),
                        "--size", str(size)], check=True, capture_output=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stand_in(name: str) -> str:
    """Small files of the right kind: JSON where the hub has JSON, BPE merges otherwise."""
    if name == "merges.txt":
        return "#version: 0.2 - TEST DOUBLE stand-in, not CLIP's merges\nt h\nth e</w>\n"
    if name == "vocab.json":
        return json.dumps({"t": 0, "h": 1, "th": 2, "the</w>": 3, "<|startoftext|>": 4, "<|endoftext|>": 5})
    return json.dumps({"_comment": "TEST DOUBLE stand-in for the hub's " + name})


def hub_snapshots() -> list[dict]:
    """The webui role's default webui_hf_snapshots: what a test's hub mirror must serve."""
    import yaml  # pylint: disable=import-outside-toplevel

    return yaml.safe_load(WEBUI_DEFAULTS.read_text())["webui_hf_snapshots"]


def publish_hub(dest: Path) -> list[str]:
    """Stand-ins for the role's default webui_hf_snapshots, where a mirror serves them;
    returns the files written (an existing file is kept)."""
    written = []
    for snapshot in hub_snapshots():
        folder = dest / snapshot["repo"] / "resolve" / snapshot["revision"]
        folder.mkdir(parents=True, exist_ok=True)
        for name in snapshot["files"]:
            if not (folder / name).exists():
                (folder / name).write_text(_stand_in(name))
                written.append(f"{snapshot['repo']}/{name}")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="double.py")
    verbs = parser.add_subparsers(dest="verb", required=True)
    repo = verbs.add_parser("repo")
    repo.add_argument("dest", type=Path)
    repo.add_argument("releases", nargs="*", choices=sorted(RELEASES))
    checkpoint = verbs.add_parser("checkpoint")
    checkpoint.add_argument("path", type=Path)
    checkpoint.add_argument("--seed", type=int, required=True)
    checkpoint.add_argument("--size", type=int, default=128)
    hub = verbs.add_parser("hub")
    hub.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "repo":
        added = publish_repo(args.dest, args.releases)
        print(f"added: {' '.join(added)}" if added else "present")
    elif args.verb == "hub":
        written = publish_hub(args.dest)
        print(f"added: {' '.join(written)}" if written else "present")
    else:
        print(write_checkpoint(args.path, args.seed, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
