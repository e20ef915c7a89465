"""Model FLOPs and peak throughput, by the comparator's definition (shared/bench/official_torch_step.py).

Model FLOPs count no recompute: dense matmuls 2·P·T per forward (P = parameters outside the token
table), attention 4·layers·D·T² per forward on the mask's visible fraction; a train step is 3
forwards. T is the official sequence length (2N − b_K)·(S + 2): the clean copies of the last clip
that our static layout also computes are overhead, not tokens.
"""

from __future__ import annotations

import random
import time

import jax
import jax.numpy as jnp
import ml_collections

from vgpt_jax import config as config_lib
from vgpt_jax.models import layout
from vgpt_jax.nn.tokens import visible


def official_partition(frames: int, seed: int) -> list[int]:
    """The comparator's (and the official data code's) draw: K ~ U{2..N}, K−1 sorted cut points."""
    rng = random.Random(seed)
    k = rng.randint(2, frames)
    cuts = sorted(rng.sample(range(1, frames), k - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, frames], strict=True)]


def matmul_peak(n: int = 8192, reps: int = 10, dtype=jnp.bfloat16) -> float:
    """Measured matmul TFLOP/s (n × n × n, random data)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    for _ in range(3):
        matmul(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = matmul(a)
    out.block_until_ready()
    return reps * 2 * n**3 / (time.perf_counter() - t0) / 1e12


def visible_fraction(partition: list[int], tokens_per_frame: int, chunk: int = 2048) -> float:
    """Visible share of the official mask for this partition, counted on the device in chunks."""
    attrs, _ = layout.training_layout(
        jnp.asarray(layout.clip_ids_from_partition(partition)), tokens_per_frame
    )
    total = int((~attrs.is_pad).sum())
    length = attrs.kind.shape[0]
    padded = -(-length // chunk) * chunk
    # extra tokens are pad, and pad tokens are left out of the count on both sides
    attrs = jax.tree.map(
        lambda a: jnp.pad(a, (0, padded - length), constant_values=a.dtype == jnp.bool_), attrs
    )

    @jax.jit
    def count(keys, start):
        q = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk), keys)
        v = visible(q, keys) & ~q.is_pad[:, None] & ~keys.is_pad[None, :]
        return v.sum(dtype=jnp.int32)

    seen = sum(int(count(attrs, s)) for s in range(0, padded, chunk))
    return seen / total**2


def train_step_flops(
    config: ml_collections.ConfigDict, partition: list[int], num_params: int, frozen_weights: bool = False
) -> float:
    """Model FLOPs of one train step on one sequence with this clip partition.

    A trained weight's matmul costs 3x its forward (forward, input gradient, weight gradient); with
    ``frozen_weights`` (LoRA: only the adapters train) no weight gradient is formed, so 2x. The
    attention scores have no weights and cost 3x either way; the adapters' rank-r matmuls are left
    out (under 1% of a layer at rank 8).
    """
    m = config.model
    sizes = config_lib.sizes(config)
    seq = (2 * sum(partition) - partition[-1]) * sizes.block_len
    dense = num_params - m.vocab_size * m.hidden_size
    vis = visible_fraction(partition, sizes.tokens_per_frame)
    weight_passes = 2 if frozen_weights else 3
    return weight_passes * 2 * dense * seq + 3 * 4 * m.num_layers * m.hidden_size * seq * seq * vis
