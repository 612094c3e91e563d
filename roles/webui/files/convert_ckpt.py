"""Convert a pickled .ckpt checkpoint to .safetensors without running its code.

Run by sdapi.node.webui as the service user, never as root: torch.load with
weights_only=True refuses anything but tensors and plain containers, so a malicious
pickle fails here instead of executing. Usage: convert_ckpt.py SRC.ckpt DEST.safetensors
"""

import sys

import torch
from safetensors.torch import save_file


def tensors_of(obj, prefix=""):
    """Flatten nested dicts (A1111 checkpoints keep weights under "state_dict")."""
    found = {}
    if isinstance(obj, torch.Tensor):
        found[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found.update(tensors_of(value, f"{prefix}{key}."))
    return found


def main(src, dest):
    data = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    tensors = tensors_of(data)
    if not tensors:
        sys.exit(f"{src} holds no tensors")
    # safetensors needs contiguous tensors that share no storage.
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, dest)
    print(f"converted {len(tensors)} tensors from {src} to {dest}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
