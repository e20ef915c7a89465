"""The SDXL VAE (the Video-GPT release's clip tokenizer): widths (128, 256, 512, 512), 2 resnets per
stage, 4 latent channels, GroupNorm(32), scaling 0.13025 — ``base_config()``'s tokenizer section."""

from vgpt_jax.config import base_config


def get_config():
    c = base_config()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    return c
