"""Image generation stand-in: real PNGs from the seed and the loaded weights, step by step."""

import time

import torch

from modules import png


class Interrupted(Exception):
    pass


def render(model, seed, width, height, steps, state, step_seconds, salt=0):
    """Return PNG bytes; updates state.sampling_step and honours state.interrupted."""
    generator = torch.Generator().manual_seed((seed + salt) % (2**63))
    latent = torch.randn((3, max(1, height // 8), max(1, width // 8)), generator=generator)
    state.sampling_steps = steps
    for step in range(steps):
        if state.interrupted:
            break
        time.sleep(step_seconds)
        state.sampling_step = step + 1
    image = torch.sigmoid(latent * model.scale + model.shift[:, None, None] * 4)
    image = torch.nn.functional.interpolate(image[None], size=(height, width), mode="nearest")[0]
    rgb = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    text = f"seed: {seed}, steps: {steps}, size: {width}x{height}, model: {model.checkpoint.model_name}"
    return png.encode_rgb(width, height, bytes(rgb.flatten().untyped_storage()), text=text)
