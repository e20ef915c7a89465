"""A 1.09 B Video-GPT for one 80 GB GPU at stage-2 length (48 frames of 320x176, no remat).

D 2048, 20 layers, 16 heads of 128, MLP 5632: the comparator's 1 B row. Its 128-wide heads
have no LongRoPE factor table, so RoPE is plain (theta 10000). With the block-sparse attention it
trains without recomputation on one 80 GB GPU, its layers unrolled in the training step (memory and
step times: README, "Performance").
"""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    m = c.model
    m.hidden_size = 2048
    m.num_layers = 20
    m.num_heads = 16
    m.num_kv_heads = 16
    m.mlp_dim = 5632
    m.rope.factors = "none"
    m.remat_policy = "none"
    c.data.num_frames = 48
    c.data.frame_interval = 4
    c.layout.partition = "random"
    # one straight program: no stacked residuals to zero-fill and copy (README, "Unrolled layers")
    c.train.scan_unroll = m.num_layers
    return with_variant(c, arg)
