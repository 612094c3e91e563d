"""A random-weight Stable Diffusion 1.5 checkpoint that the REAL A1111 v1.10.1 loads.

Why: the tests that deploy the real webui need a checkpoint it accepts, loads and generates
with on a CPU, and no weights can be downloaded. Random weights in the original single-file
layout do: A1111 picks configs/v1-inference.yaml from the keys (modules/sd_models_config.py)
and loads the state dict into its LatentDiffusion model.

What the file holds (about 1130 tensors, 1066 M parameters, 2 GiB):
- model.diffusion_model.*: ldm's UNetModel with v1-inference.yaml's unet_config, torch's
  default initialisation; the layers ldm initialises to zero (each block's output
  convolution, the UNet's last one) stay zero, which keeps sampling stable;
- first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*: the parts of ldm's
  AutoencoderKL with the yaml's ddconfig, built directly because AutoencoderKL itself needs
  pytorch_lightning;
- cond_stage_model.transformer.text_model.*: transformers' CLIPTextModel (the one A1111 uses,
  transformers 4.30.2) for the text config of openai/clip-vit-large-patch14, written by hand
  from the fixture's config.json so that transformers is not needed, with its initial scales.
fp16 except the text model's position_ids (int64, as transformers 4.30.2 saves it). ldm comes
from the fixture's mirror of Stability-AI/stablediffusion at the commit the real-webui tests
deploy. A seed gives the same bytes again with the same torch version.

Command line (needs torch, safetensors and tests/lib/checkpoint-requirements.txt: the double's
virtualenv, .cache/double-venv, made by scripts/setup-host.sh):
    .cache/double-venv/bin/python tests/lib/sdapi_testlib/sd15_checkpoint.py \\
        [--fixtures DIR] [--out PATH] [--seed N]
Writes PATH and PATH.sha256 (the hex sum); keeps both when the sum and the seed still match.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this file's folder would come first on the import path, and its
    # http.py would shadow the standard library's (which torch imports).
    del sys.path[0]

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "a1111-v1.10.1"
OUT = ROOT / ".cache" / "real-webui" / "sd15-random.safetensors"
# ldm's sources, extracted from the fixture's bare mirror (git archive) once per commit.
SOURCES = ROOT / ".cache" / "real-webui" / "stablediffusion-src"
MIRROR = Path("repos") / "stablediffusion.git.tar.gz"
# The commit the fixture's README says to deploy for stable-diffusion-stability-ai.
STABLEDIFFUSION_COMMIT = "0dac1da5bcbaac9270694e97577500905d980c60"
CLIP_CONFIG = Path("hf") / "openai--clip-vit-large-patch14" / "config.json"
DEFAULT_SEED = 0

# configs/v1-inference.yaml of A1111 v1.10.1 (the stablediffusion repo has v2 configs only):
# model.params.unet_config.params, first_stage_config.params.ddconfig and embed_dim. Written
# out here because the double's virtualenv has no YAML parser; the unit test compares them.
UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
    "num_heads": 8, "use_spatial_transformer": True, "transformer_depth": 1,
    "context_dim": 768, "use_checkpoint": False, "legacy": False,
}
DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
    "dropout": 0.0,
}
EMBED_DIM = 4

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."
# safetensors writes __metadata__ in the order of a Rust hash map, which differs from one
# process to the next: with a single key the header, and so the file, stays the same.
METADATA_KEY = "sdapi_test_checkpoint"


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], check=True, capture_output=True).stdout


def ensure_sources(fixtures: Path, dest: Path = SOURCES) -> Path:
    """dest holding ldm/ of the stablediffusion mirror at STABLEDIFFUSION_COMMIT; extracted
    once (dest/.commit says which commit), into a temporary folder first so that an
    interrupted run leaves nothing half-written."""
    def extracted() -> bool:
        stamp = dest / ".commit"
        return stamp.is_file() and stamp.read_text().strip() == STABLEDIFFUSION_COMMIT

    if extracted():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        with tarfile.open(fixtures / MIRROR) as mirror:
            mirror.extractall(tmp, filter="data")
        archive = _git("--git-dir", str(Path(tmp) / "stablediffusion.git"), "archive",
                       "--format=tar", STABLEDIFFUSION_COMMIT, "ldm")
        tree = Path(tmp) / "tree"
        with tarfile.open(fileobj=io.BytesIO(archive)) as sources:
            sources.extractall(tree, filter="data")
        (tree / ".commit").write_text(STABLEDIFFUSION_COMMIT + "\n")
        # Another run (the unit test, a scenario's prepare) may have finished first: its
        # copy is as good, and it may be importing from it.
        if not extracted():
            shutil.rmtree(dest, ignore_errors=True)
            tree.rename(dest)
    return dest


def _import_ldm(sources: Path):
    """ldm's UNetModel, Encoder and Decoder. ldm prints a line per attention block and one
    about xformers; they say nothing here, so they are swallowed."""
    if str(sources) not in sys.path:
        sys.path.insert(0, str(sources))
    with contextlib.redirect_stdout(io.StringIO()):
        # pylint: disable=import-outside-toplevel,import-error
        from ldm.modules.diffusionmodules.model import Decoder, Encoder
        from ldm.modules.diffusionmodules.openaimodel import UNetModel
    return UNetModel, Encoder, Decoder


def _module_tensors(module, prefix: str) -> dict:
    """module's state dict in fp16 under prefix. half() converts one parameter at a time,
    so the fp32 and fp16 copies of the 3.4 GB UNet are never held whole at once."""
    return {prefix + key: value for key, value in module.half().state_dict().items()}


def unet_tensors(sources: Path, device: str = "cpu") -> dict:
    unet_cls = _import_ldm(sources)[0]
    import torch  # pylint: disable=import-outside-toplevel,import-error

    with torch.device(device), contextlib.redirect_stdout(io.StringIO()):
        unet = unet_cls(**UNET_CONFIG)
    return _module_tensors(unet, UNET_PREFIX)


def vae_tensors(sources: Path, device: str = "cpu") -> dict:
    """AutoencoderKL's weights: its encoder, decoder and the two 1x1 convolutions between
    them and the latent, built as AutoencoderKL.__init__ builds them."""
    encoder_cls, decoder_cls = _import_ldm(sources)[1:]
    import torch  # pylint: disable=import-outside-toplevel,import-error

    z_channels = DDCONFIG["z_channels"]
    with torch.device(device), contextlib.redirect_stdout(io.StringIO()):
        parts = {
            "encoder": encoder_cls(**DDCONFIG),
            "decoder": decoder_cls(**DDCONFIG),
            "quant_conv": torch.nn.Conv2d(2 * z_channels, 2 * EMBED_DIM, 1),
            "post_quant_conv": torch.nn.Conv2d(EMBED_DIM, z_channels, 1),
        }
    tensors = {}
    for name, part in parts.items():
        tensors.update(_module_tensors(part, f"{VAE_PREFIX}{name}."))
    return tensors


def text_tensors(clip_config: dict, device: str = "cpu") -> dict:
    """CLIPTextModel's state dict (transformers 4.30.2 names, text_model.* inside
    FrozenCLIPEmbedder's transformer) for the text config. Weights are normal with the
    standard deviations transformers' CLIPPreTrainedModel._init_weights uses, layer norms
    are 1 and 0, linear biases 0: activations stay of order one through the 12 layers."""
    import torch  # pylint: disable=import-outside-toplevel,import-error

    cfg = clip_config["text_config"]
    hidden, inner, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    factor = cfg["initializer_factor"]
    embedding_std = cfg["initializer_range"] * factor
    # transformers' in_proj_std (q, k, v and fc2), out_proj_std and fc_std.
    in_std = hidden ** -0.5 * (2 * layers) ** -0.5 * factor
    out_std = hidden ** -0.5 * factor
    fc_std = (2 * hidden) ** -0.5 * factor

    def normal(std: float, *shape: int):
        return torch.empty(shape, device=device).normal_(0.0, std).half()

    def zeros(*shape: int):
        return torch.zeros(shape, dtype=torch.float16, device=device)

    def ones(*shape: int):
        return torch.ones(shape, dtype=torch.float16, device=device)

    def linear(name: str, std: float, outputs: int, inputs: int) -> dict:
        return {f"{name}.weight": normal(std, outputs, inputs), f"{name}.bias": zeros(outputs)}

    def layer_norm(name: str) -> dict:
        return {f"{name}.weight": ones(hidden), f"{name}.bias": zeros(hidden)}

    positions = cfg["max_position_embeddings"]
    tensors = {
        "embeddings.token_embedding.weight": normal(embedding_std, cfg["vocab_size"], hidden),
        "embeddings.position_embedding.weight": normal(embedding_std, positions, hidden),
        # A buffer, not a weight: 0..76 as transformers 4.30.2 registers (and saves) it.
        "embeddings.position_ids": torch.arange(positions, device=device).unsqueeze(0),
    }
    for index in range(layers):
        layer = f"encoder.layers.{index}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            tensors.update(linear(f"{layer}.self_attn.{proj}", in_std, hidden, hidden))
        tensors.update(linear(f"{layer}.self_attn.out_proj", out_std, hidden, hidden))
        tensors.update(layer_norm(f"{layer}.layer_norm1"))
        tensors.update(linear(f"{layer}.mlp.fc1", fc_std, inner, hidden))
        tensors.update(linear(f"{layer}.mlp.fc2", in_std, hidden, inner))
        tensors.update(layer_norm(f"{layer}.layer_norm2"))
    tensors.update(layer_norm("final_layer_norm"))
    return {TEXT_PREFIX + key: value for key, value in tensors.items()}


def build(fixtures: Path, seed: int, device: str = "cpu", sources: Path = SOURCES) -> dict:
    """The whole checkpoint's state dict. On the meta device it has every key, shape and
    dtype but no data, in a second and no memory: what the unit test checks."""
    import torch  # pylint: disable=import-outside-toplevel,import-error

    sources = ensure_sources(fixtures, sources)
    clip_config = json.loads((fixtures / CLIP_CONFIG).read_text())
    # One seed for the process's generator; the parts draw from it in a fixed order.
    torch.manual_seed(seed)
    tensors = unet_tensors(sources, device)
    tensors.update(vae_tensors(sources, device))
    tensors.update(text_tensors(clip_config, device))
    return tensors


def metadata(seed: int) -> dict:
    """Where the file comes from, in one key (see METADATA_KEY); no time stamp, so that a
    rebuild gives the same bytes."""
    import torch  # pylint: disable=import-outside-toplevel,import-error

    about = {"what": "random weights in the Stable Diffusion 1.5 layout, for tests",
             "maker": "sdapi_testlib.sd15_checkpoint", "seed": seed, "torch": torch.__version__,
             "stablediffusion": STABLEDIFFUSION_COMMIT}
    return {METADATA_KEY: json.dumps(about, sort_keys=True)}


def read_metadata(path: Path) -> dict:
    """The __metadata__ of a .safetensors file, read from its header (an 8-byte little-endian
    length, then JSON) so that checking an existing file needs no safetensors."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return header.get("__metadata__") or {}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sum_path(out: Path) -> Path:
    return out.with_name(out.name + ".sha256")


def is_current(out: Path, seed: int) -> bool:
    """out was made with seed and still has the sum recorded next to it when it was written."""
    try:
        about = json.loads(read_metadata(out).get(METADATA_KEY, "{}"))
        recorded = sum_path(out).read_text().strip()
    except (OSError, ValueError, struct.error):
        return False
    return about.get("seed") == seed and sha256_of(out) == recorded


def _write_atomically(path: Path, write) -> None:
    """write(tmp) then rename to path: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        # safetensors creates its file readable by the owner only; tests hand it on (a
        # file:// model URL, a copy into a container), so it gets the usual mode.
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_checkpoint(fixtures: Path, out: Path, seed: int) -> dict:
    """Builds and writes out and out.sha256. Returns the figures main() reports."""
    from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel,import-error

    tensors = build(fixtures, seed)
    figures = {"tensors": len(tensors),
               "parameters": sum(t.numel() for t in tensors.values() if t.is_floating_point())}
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata(seed)))
    del tensors
    figures["sha256"] = sha256_of(out)
    _write_atomically(sum_path(out), lambda tmp: tmp.write_text(figures["sha256"] + "\n"))
    return figures


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)  # ru_maxrss is KiB


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sd15_checkpoint.py", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES,
                        help="the a1111-v1.10.1 fixture (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default: %(default)s")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if is_current(args.out, args.seed):
        print(f"present: {args.out} (seed {args.seed}, sha256 {sum_path(args.out).read_text().strip()})")
        return 0
    figures = write_checkpoint(args.fixtures, args.out, args.seed)
    size = args.out.stat().st_size
    print(f"wrote {args.out} (seed {args.seed}) in {time.monotonic() - started:.1f} s: "
          f"{figures['tensors']} tensors, {figures['parameters']:,} parameters, "
          f"{size:,} bytes ({size / (1 << 30):.2f} GiB), peak RSS {_peak_rss_gib():.2f} GiB, "
          f"sha256 {figures['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
