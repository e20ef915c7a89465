"""Official pre-training stage 1: 16 frames, every frame its own clip (next-frame), per-frame time.

The 3.76 B release backbone (spec §3). As actually run, stage 1's AdamW used torch's defaults
(betas 0.9/0.999, eps 1e-8): the script passes 0.95 but the train script ignores it (spec §8).
"""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    c.data.num_frames = 16
    c.data.frame_interval = 4
    c.data.flexible_interval = False
    c.layout.partition = "per_frame"  # one t per frame = one t per one-frame clip
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    return with_variant(c, arg)
