"""vgpt_jax: Video-GPT (next-clip diffusion) in JAX/Flax."""

__version__ = "0.1.0"
