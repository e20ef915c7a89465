"""Official pre-training stage 3: 48 frames, per-video interval U{4..min(12, (T-1)//(N-1))}."""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    c.data.num_frames = 48
    c.data.flexible_interval = True
    c.data.frame_interval = 4  # lower bound of the flexible interval
    c.data.max_interval = 12
    c.layout.partition = "random"
    return with_variant(c, arg)
