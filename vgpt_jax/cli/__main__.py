from vgpt_jax.cli import run

run()
