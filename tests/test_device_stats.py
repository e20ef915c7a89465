"""CompileClock counts the XLA compiles inside its block and only those."""

import jax
import jax.numpy as jnp

from vgpt_jax.device_stats import CompileClock, device_memory_gib


def test_compile_clock_counts_the_compiles_of_its_block():
    with CompileClock() as clock:
        jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.ones(7)).block_until_ready()
    assert 0 < clock.compile_s <= clock.wall_s
    inside = clock.compile_s
    jax.jit(lambda x: jnp.cos(x) - 2.0)(jnp.ones(5)).block_until_ready()  # after the block
    assert clock.compile_s == inside


def test_device_memory_on_a_cpu_is_zero():
    assert device_memory_gib() == {"memory_gib": 0.0, "peak_memory_gib": 0.0}
