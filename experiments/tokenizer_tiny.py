"""Tokenizer training recipe for the tiny CPU experiment (the demo's tokenizer).

8x downsampling, 16 latent channels, widths (8, 16, 32, 64), one resnet per stage, GroupNorm(2);
64x64 synthetic-physics frames, 16 per video, the last 8 videos held out. Pure L2 reconstruction
(PSNR is L2) with AdamW (b2 0.99) at 2e-3, 100 warm-up steps and a cosine decay to 0 at the last
step, batch 16; ``scaling_factor`` is fitted afterwards so that the latents have unit variance.
The README's "Clip tokenizer" section has this recipe's held-out PSNR and time, and what the sweep
that chose it showed.
"""

import os

from vgpt_jax.config import load_experiment


def get_config():
    c = load_experiment(os.path.join(os.path.dirname(__file__), "tiny_cpu.py"))
    t = c.tokenizer
    # 16 latent channels (not the SDXL VAE's 4): at 8x downsampling on these frames 4 lose several dB
    # held out (README, "Clip tokenizer"); the Video-GPT that models these latents must agree
    t.latent_channels = c.model.latent_channels = 16
    t.optim.learning_rate = 2e-3
    t.optim.b2 = 0.99
    t.optim.weight_decay = 0.0

    t.train.steps = 1200
    t.train.batch_size = 16
    t.optim.warmup_steps = 100
    t.optim.decay_steps = t.train.steps - t.optim.warmup_steps  # the cosine reaches 0 at the last step
    t.train.l1_weight = 0.0
    t.train.l2_weight = 1.0
    t.train.log_every = 50
    t.train.frame_size = 64
    t.train.frames_per_sample = 4
    t.train.frame_interval = 2
    t.train.frames_per_video = 16
    t.train.eval_videos = 8
    t.train.fit_scaling_factor = True  # unit-variance latents for the diffusion model
    return c
