"""A tiny Video-GPT that trains in seconds on a CPU (tests, the demo, quick experiments).

Its sizes are :func:`vgpt_jax.config.local_variant`'s (what every ``experiments/X.py:runlocal``
gets); this file adds a recipe that learns at that size.
"""

from vgpt_jax.config import base_config, local_variant


def get_config():
    c = local_variant(base_config())
    c.model.attention.query_chunk = 512

    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 10
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0

    c.train.steps = 200
    c.train.log_every = 20
    return c
