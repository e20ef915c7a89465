"""Official pre-training stage 4: 80 frames, flexible interval (bound 12), random clip partition."""

from vgpt_jax.config import base_config


def get_config():
    c = base_config()
    c.data.num_frames = 80
    c.data.flexible_interval = True
    c.data.frame_interval = 4
    c.data.max_interval = 12
    c.layout.partition = "random"
    return c
