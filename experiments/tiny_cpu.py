"""A tiny Video-GPT that trains in seconds on a CPU (tests, the demo, quick experiments)."""

from vgpt_jax.config import base_config


def get_config():
    c = base_config()
    m = c.model
    m.hidden_size = 64
    m.num_layers = 2
    m.num_heads = 4
    m.num_kv_heads = 4
    m.mlp_dim = 128
    m.vocab_size = 8
    m.tokens.pad, m.tokens.diffusion, m.tokens.image_start, m.tokens.image_end = 0, 1, 2, 3
    m.pos_embed_max_size = 16
    m.pos_embed_base_size = 8
    m.rope.factors = "none"  # LongRoPE's factors belong to the 96-wide heads of the release
    m.dtype = "float32"
    m.remat_policy = "none"
    m.attention.query_chunk = 512

    c.data.num_frames = 8
    c.data.latent_height = 8
    c.data.latent_width = 8
    c.data.per_device_batch_size = 1

    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 10
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0

    c.train.steps = 200
    c.train.log_every = 20

    c.mesh.data = -1
    c.mesh.fsdp = 1

    c.sampling.steps = 10
    c.sampling.clip_frames = 4
    c.sampling.window_frames = 8

    # 8x downsampling to the 8x8x4 latent of 64x64 frames; trained by experiments/tokenizer_tiny.py
    t = c.tokenizer
    t.block_out_channels = (8, 16, 32, 64)
    t.layers_per_block = 1
    t.norm_num_groups = 2
    t.chunk_frames = 32
    return c
