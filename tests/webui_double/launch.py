"""TEST DOUBLE of AUTOMATIC1111's launch.py: same flags, same API, no GPU, no network.

See README.md. Never deployed outside the sdapi.node test scenarios.
"""

import importlib.metadata
import os
import shlex
import subprocess
import sys
import time

from modules import cmd_args

VERSION = "v1.10.1-double"


def log(message):
    # A1111 prints with print(): on a pipe (systemd's journal) stdout is block-buffered, so
    # lines arrive late unless Python runs unbuffered (PYTHONUNBUFFERED=1 or -u).
    print(message)


def commit_hash():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cmd_args.SCRIPT_PATH,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "<none>"


def unmet_requirements():
    missing = []
    path = os.path.join(cmd_args.SCRIPT_PATH, "requirements_versions.txt")
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, _sep, version = line.partition("==")
            try:
                if version and importlib.metadata.version(name) != version:
                    missing.append(line)
            except importlib.metadata.PackageNotFoundError:
                missing.append(line)
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        missing.append("torch")
    return missing


def prepare_environment(args):
    """Where A1111 installs torch and requirements from the network, the double only checks."""
    if args.skip_prepare_environment:
        return
    missing = [] if args.skip_install else unmet_requirements()
    if missing:
        log(f"Installing requirements: {', '.join(missing)}")
        log("RuntimeError: Couldn't install requirements. The webui test double never reaches "
            "the network: install them at deploy time and start with --skip-prepare-environment.")
        sys.exit(1)
    import torch

    if not args.skip_torch_cuda_test and not torch.cuda.is_available():
        log("RuntimeError: Torch is not able to use GPU; add --skip-torch-cuda-test to "
            "COMMANDLINE_ARGS variable to disable this check")
        sys.exit(1)


def check_device(args):
    """A1111 needs --use-cpu all (Forge: --always-cpu) to run its model on a CPU."""
    import torch

    if torch.cuda.is_available() or args.always_cpu or {"all", "sd"} & set(args.use_cpu):
        return
    log("AssertionError: Torch not compiled with CUDA enabled")
    sys.exit(1)


def main():
    argv = sys.argv[1:] + shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    args = cmd_args.parse(argv)
    log(f"Python {sys.version.split()[0]}")
    log(f"Version: {VERSION}")
    log(f"Commit hash: {commit_hash()}")
    prepare_environment(args)
    if args.exit:
        log("Exiting because of --exit argument")
        return 0
    if not args.nowebui:
        log("The webui test double serves the API only: start it with --api --nowebui.")
        return 1
    log(f"Launching Web UI with arguments: {' '.join(argv)}")
    started = time.perf_counter()
    # A1111's config_states.list_config_states() at start, --nowebui too: the directory is
    # made inside the checkout, so a read-only checkout dies here with OSError [Errno 30]
    # unless config_states is (a symlink to) a directory that exists; then it lists the
    # directory, so one the service user cannot read dies here with [Errno 13].
    config_states = os.path.join(cmd_args.SCRIPT_PATH, "config_states")
    os.makedirs(config_states, exist_ok=True)
    os.listdir(config_states)
    check_device(args)
    from modules import api  # imports torch: only after prepare_environment vouched for it

    node = api.Node(args, log)
    if os.environ.get("SDAPI_DOUBLE_LAZY_LOAD") != "1":
        node.load_in_background()
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    log(f"Startup time: {time.perf_counter() - started:.1f}s (prepare environment: 0.0s).")
    api.serve(node, host, args.port or 7861)
    return 0


if __name__ == "__main__":
    sys.exit(main())
