"""Official pre-training stage 2: 48 frames at interval 4, random clip partition K ~ U{2..48}.

The 3.76 B release backbone; AdamW(1e-4, 0.9, 0.95, eps 1e-5, wd 0.1), clip 1.0, 320k warm-up.
"""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    c.data.num_frames = 48
    c.data.frame_interval = 4
    c.data.flexible_interval = False
    c.layout.partition = "random"
    return with_variant(c, arg)
