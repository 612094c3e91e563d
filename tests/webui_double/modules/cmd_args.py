"""A1111's command line (the flags of v1.10 plus Forge's CPU switch), parsed like A1111.

Defaults that depend on the install location are resolved against this checkout, as in
A1111's modules/paths_internal.py.
"""

import argparse
import os

SCRIPT_PATH = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

_FLAGS = [
    "-f", "--update-all-extensions", "--skip-python-version-check", "--skip-torch-cuda-test",
    "--reinstall-xformers", "--reinstall-torch", "--update-check", "--skip-install",
    "--skip-prepare-environment", "--no-half", "--no-half-vae", "--medvram", "--lowvram",
    "--lowram", "--upcast-sampling", "--xformers", "--force-enable-xformers",
    "--opt-split-attention", "--opt-sub-quad-attention", "--opt-sdp-attention",
    "--opt-sdp-no-mem-attention", "--disable-opt-split-attention", "--disable-nan-check",
    "--listen", "--hide-ui-dir-config", "--freeze-settings", "--enable-insecure-extension-access",
    "--disable-safe-unpickle", "--api", "--api-log", "--nowebui", "--api-server-stop",
    "--skip-version-check", "--no-hashing", "--no-download-sd-model", "--exit",
    "--disable-all-extensions", "--disable-extra-extensions", "--log-startup",
    "--always-cpu", "--no-gradio-queue", "--administrator", "--opt-channelslast",
]
_VALUED = {
    "--data-dir": SCRIPT_PATH, "--models-dir": None, "--ckpt": None, "--ckpt-dir": None,
    "--vae-dir": None, "--lora-dir": None, "--embeddings-dir": None, "--hypernetwork-dir": None,
    "--server-name": None, "--api-auth": None, "--cors-allow-origins": None,
    "--device-id": None, "--loglevel": None, "--gradio-auth": None, "--config": None,
    "--ui-settings-file": None, "--styles-file": None, "--tls-keyfile": None,
    "--tls-certfile": None,
}


def build_parser():
    parser = argparse.ArgumentParser(prog="launch.py")
    for flag in _FLAGS:
        parser.add_argument(flag, action="store_true")
    for flag, default in _VALUED.items():
        parser.add_argument(flag, type=str, default=default)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout-keep-alive", type=int, default=30)
    parser.add_argument("--precision", choices=["full", "half", "autocast"], default="autocast")
    parser.add_argument("--use-cpu", nargs="+", default=[], type=str.lower)
    return parser


def parse(argv):
    args = build_parser().parse_args(argv)
    if args.models_dir is None:
        args.models_dir = os.path.join(args.data_dir, "models")
    if args.embeddings_dir is None:
        args.embeddings_dir = os.path.join(args.data_dir, "embeddings")
    return args
