"""Official pre-training stage 4: 80 frames, flexible interval (bound 12), random clip partition."""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    c.data.num_frames = 80
    c.data.flexible_interval = True
    c.data.frame_interval = 4
    c.data.max_interval = 12
    c.layout.partition = "random"
    return with_variant(c, arg)
