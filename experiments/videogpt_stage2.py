"""Official pre-training stage 2: 48 frames at interval 4, random clip partition K ~ U{2..48}.

The 3.76 B release backbone; AdamW(1e-4, 0.9, 0.95, eps 1e-5, wd 0.1), clip 1.0, 320k warm-up.
"""

from vgpt_jax.config import base_config


def get_config():
    c = base_config()
    c.data.num_frames = 48
    c.data.frame_interval = 4
    c.data.flexible_interval = False
    c.layout.partition = "random"
    return c
