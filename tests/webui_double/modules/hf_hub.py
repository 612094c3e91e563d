"""The CLIP text files A1111 reads from the Hugging Face hub cache when it creates an SD1.5 model.

A1111 builds the model's text encoder with transformers (CLIPTokenizer and the CLIPTextModel
config of openai/clip-vit-large-patch14); transformers takes those files from the hub cache,
<cache>/models--openai--clip-vit-large-patch14/snapshots/<revision>/, where <revision> is the
text of refs/main (read as is: a trailing newline names another snapshot). The double has no
network, so online or offline (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) it behaves like the
offline webui: a missing file fails the model's creation. It parses what it reads, so a
truncated or wrong file fails too.
"""

import json
import os

CLIP_REPO = "openai/clip-vit-large-patch14"
CLIP_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
              "config.json")
TOKENIZER_ERROR = (
    f"Can't load tokenizer for '{CLIP_REPO}'. If you were trying to load it from "
    "'https://huggingface.co/models', make sure you don't have a local directory with the same "
    f"name. Otherwise, make sure '{CLIP_REPO}' is the correct path to a directory containing all "
    "relevant files for a CLIPTokenizer tokenizer."
)


def cache_dir(environ=None):
    """The hub cache, in huggingface_hub's order of environment variables."""
    env = os.environ if environ is None else environ
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    path = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return os.path.expandvars(os.path.expanduser(path))


def snapshot_dir(repo, environ=None):
    """The snapshot refs/main points at, or None when the ref is not there."""
    storage = os.path.join(cache_dir(environ), "models--" + repo.replace("/", "--"))
    try:
        with open(os.path.join(storage, "refs", "main"), encoding="utf-8") as fh:
            revision = fh.read()
    except (OSError, ValueError):
        return None
    return os.path.join(storage, "snapshots", revision)


def _read_clip_file(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as fh:
        if name.endswith(".json"):
            return json.load(fh)
        text = fh.read()
    if not text.strip():
        raise ValueError(f"{name} is empty")
    return text


def load_clip_text_files(environ=None):
    """The tokenizer and text config files, read and parsed; OSError as transformers raises it."""
    folder = snapshot_dir(CLIP_REPO, environ)
    if folder is None:
        raise OSError(TOKENIZER_ERROR)
    loaded = {}
    for name in CLIP_FILES:
        try:
            loaded[name] = _read_clip_file(folder, name)
        except (OSError, ValueError) as exc:
            raise OSError(TOKENIZER_ERROR) from exc
    return loaded
