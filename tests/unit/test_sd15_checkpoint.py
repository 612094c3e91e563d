"""The random SD1.5 checkpoint (sdapi_testlib.sd15_checkpoint) has what A1111 v1.10.1 reads.

Cheap: no 2 GiB file. The checkpoint's state dict is built on torch's meta device (every key,
shape and dtype, no data) by the torch of .cache/double-venv (made by scripts/setup-host.sh),
in a subprocess because the unit tests run under .venv, which has no torch.
"""

from __future__ import annotations

import json
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from sdapi_testlib import sd15_checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".cache" / "double-venv" / "bin" / "python"
# A1111 v1.10.1, the commit the webui role deploys; it ships configs/v1-inference.yaml.
WEBUI_MIRROR = ckpt.FIXTURES / "repos" / "stable-diffusion-webui.git.tar.gz"
WEBUI_COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
# SD1.5's own figures (v1-5-pruned-emaonly without the EMA and DDPM buffers, which A1111
# computes itself): UNet 859,520,964 + VAE 83,653,863 + CLIP text 123,060,480.
TENSORS = 1131
PARAMETERS = 1_066_235_307

if not PYTHON.exists():
    raise RuntimeError(f"{PYTHON} is missing: run `make setup` first")
if not ckpt.FIXTURES.is_dir():
    pytest.skip(f"the a1111-v1.10.1 fixture is not at {ckpt.FIXTURES}", allow_module_level=True)

# Run by the double's python: the meta-device table {key: [shape, dtype]} and the metadata.
_DUMP = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sdapi_testlib import sd15_checkpoint as ckpt
tensors = ckpt.build(ckpt.FIXTURES, seed=0, device="meta")
print(json.dumps({"table": {k: [list(v.shape), str(v.dtype)] for k, v in tensors.items()},
                  "metadata": ckpt.metadata(0)}))
"""


@pytest.fixture(scope="module")
def dump():
    out = subprocess.run([str(PYTHON), "-c", _DUMP, str(ROOT / "tests" / "lib")], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


@pytest.fixture(scope="module")
def table(dump):
    return dump["table"]


@pytest.fixture(scope="module")
def text_config():
    return json.loads((ckpt.FIXTURES / ckpt.CLIP_CONFIG).read_text())["text_config"]


def _numel(shape):
    count = 1
    for size in shape:
        count *= size
    return count


def test_counts_are_sd15s(table):
    parameters = sum(_numel(shape) for shape, dtype in table.values() if dtype == "torch.float16")
    assert (len(table), parameters) == (TENSORS, PARAMETERS)


def test_every_key_is_under_the_three_original_prefixes(table):
    prefixes = (ckpt.UNET_PREFIX, ckpt.VAE_PREFIX, ckpt.TEXT_PREFIX)
    assert [k for k in table if not k.startswith(prefixes)] == []
    assert all(any(k.startswith(p) for k in table) for p in prefixes)
    vae_parts = {k[len(ckpt.VAE_PREFIX):].split(".")[0] for k in table if k.startswith(ckpt.VAE_PREFIX)}
    assert vae_parts == {"encoder", "decoder", "quant_conv", "post_quant_conv"}


def test_dtypes_are_fp16_but_position_ids(table):
    position_ids = ckpt.TEXT_PREFIX + "embeddings.position_ids"
    assert {k: v[1] for k, v in table.items() if v[1] != "torch.float16"} == {position_ids: "torch.int64"}
    assert table[position_ids][0] == [1, 77]


def test_a1111_detects_v1_inference_yaml(table):
    """modules/sd_models_config.py guess_model_config_from_state_dict() falls through to
    v1-inference.yaml: no key of another family, a UNet input of 4 channels."""
    for other in ("model.diffusion_model.x_embedder.proj.weight",  # SD3
                  "conditioner.embedders.1.model.ln_final.weight",  # SDXL
                  "conditioner.embedders.0.model.ln_final.weight",  # SDXL refiner
                  "depth_model.model.pretrained.act_postprocess3.0.project.0.bias",
                  "embedder.model.ln_final.weight",  # unCLIP
                  "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",  # SD2
                  "cond_stage_model.roberta.embeddings.word_embeddings.weight"):  # AltDiffusion
        assert other not in table
    assert table["model.diffusion_model.input_blocks.0.0.weight"][0] == [320, 4, 3, 3]
    # Cross-attention reads CLIP ViT-L's 768 features (SD2's OpenCLIP has 1024), and v1's
    # transformer projections are 1x1 convolutions, not linear layers.
    block = "model.diffusion_model.input_blocks.1.1."
    assert table[block + "transformer_blocks.0.attn2.to_k.weight"][0] == [320, 768]
    assert table[block + "proj_in.weight"][0] == [320, 320, 1, 1]
    assert table["first_stage_model.quant_conv.weight"][0] == [8, 8, 1, 1]
    assert table["first_stage_model.post_quant_conv.weight"][0] == [4, 4, 1, 1]


def test_text_model_matches_config_json(table, text_config):
    hidden, inner = text_config["hidden_size"], text_config["intermediate_size"]
    layers = text_config["num_hidden_layers"]
    text = {k[len(ckpt.TEXT_PREFIX):]: v[0] for k, v in table.items() if k.startswith(ckpt.TEXT_PREFIX)}
    want = {
        "embeddings.token_embedding.weight": [text_config["vocab_size"], hidden],
        "embeddings.position_embedding.weight": [text_config["max_position_embeddings"], hidden],
        "embeddings.position_ids": [1, text_config["max_position_embeddings"]],
        "final_layer_norm.weight": [hidden], "final_layer_norm.bias": [hidden],
    }
    for index in range(layers):
        layer = f"encoder.layers.{index}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            want[f"{layer}self_attn.{proj}.weight"] = [hidden, hidden]
            want[f"{layer}self_attn.{proj}.bias"] = [hidden]
        for norm in ("layer_norm1", "layer_norm2"):
            want[f"{layer}{norm}.weight"] = [hidden]
            want[f"{layer}{norm}.bias"] = [hidden]
        want[f"{layer}mlp.fc1.weight"] = [inner, hidden]
        want[f"{layer}mlp.fc1.bias"] = [inner]
        want[f"{layer}mlp.fc2.weight"] = [hidden, inner]
        want[f"{layer}mlp.fc2.bias"] = [hidden]
    assert text == want


def test_model_configs_are_a1111s_v1_inference_yaml(tmp_path):
    with tarfile.open(WEBUI_MIRROR) as mirror:
        mirror.extractall(tmp_path, filter="data")
    text = subprocess.run(["git", "--git-dir", str(tmp_path / "stable-diffusion-webui.git"), "show",
                           f"{WEBUI_COMMIT}:configs/v1-inference.yaml"],
                          check=True, capture_output=True, text=True).stdout
    params = yaml.safe_load(text)["model"]["params"]
    assert params["unet_config"]["target"] == "ldm.modules.diffusionmodules.openaimodel.UNetModel"
    assert params["unet_config"]["params"] == ckpt.UNET_CONFIG
    first_stage = params["first_stage_config"]["params"]
    assert first_stage["ddconfig"] == ckpt.DDCONFIG
    assert first_stage["embed_dim"] == ckpt.EMBED_DIM


def test_metadata_is_one_key_without_a_time_stamp(dump):
    metadata = dump["metadata"]
    assert list(metadata) == [ckpt.METADATA_KEY]
    about = json.loads(metadata[ckpt.METADATA_KEY])
    assert set(about) == {"what", "maker", "seed", "torch", "stablediffusion"}
    assert (about["seed"], about["stablediffusion"]) == (0, ckpt.STABLEDIFFUSION_COMMIT)


def _fake_checkpoint(path: Path, seed: int) -> None:
    """A .safetensors file with one tensor and the tool's metadata, written by hand."""
    header = json.dumps({"__metadata__": {ckpt.METADATA_KEY: json.dumps({"seed": seed})},
                         "w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)


def test_an_existing_file_is_kept_only_with_its_seed_and_sum(tmp_path):
    out = tmp_path / "sd15.safetensors"
    assert not ckpt.is_current(out, 3)
    _fake_checkpoint(out, 3)
    assert not ckpt.is_current(out, 3)  # no .sha256 next to it
    ckpt.sum_path(out).write_text(ckpt.sha256_of(out) + "\n")
    assert ckpt.is_current(out, 3)
    assert not ckpt.is_current(out, 4)
    ckpt.sum_path(out).write_text("0" * 64 + "\n")
    assert not ckpt.is_current(out, 3)
