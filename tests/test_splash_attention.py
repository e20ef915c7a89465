"""Splash attention backend (vgpt_jax.nn.splash) against the rule and the ``xla`` reference.

The kernels run in the Pallas interpreter on the CPU (``interpret=True``), in fp32.
- ``key_ranges``: the two intervals per query over the sorted keys, read back as the dense mask the
  kernels evaluate, equal ``visible`` exactly on many partitions and on the sampling layouts;
  ``tile_runs`` marks exactly the tiles holding a visible pair.
- ``splash_attention``: values and q/k/v gradients (``jax.vjp``, random cotangent) equal
  ``xla_attention`` for training layouts (random and fixed partitions, pad queries and keys),
  sampling with a history prefix and CFG rows whose prefix is all pad, the history prefill, and
  lengths that are and are not multiples of the tiles.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgpt_jax.models import layout
from vgpt_jax.nn.attention import xla_attention
from vgpt_jax.nn.splash import KeyRanges, key_ranges, splash_attention, tile_runs
from vgpt_jax.nn.tokens import TokenAttrs, concat_attrs, visible


def stack_rows(*rows: TokenAttrs) -> TokenAttrs:
    """Per-example attributes (T,) -> a batch (B, T)."""
    return TokenAttrs(*(jnp.stack(fields) for fields in zip(*rows, strict=True)))


def training_attrs(partitions, tokens_per_frame: int) -> TokenAttrs:
    clip_ids = jnp.stack([jnp.asarray(layout.clip_ids_from_partition(p)) for p in partitions])
    return layout.training_layout(clip_ids, tokens_per_frame)[0]


def random_training_attrs(seed: int, batch: int, num_frames: int, tokens_per_frame: int) -> TokenAttrs:
    keys = jax.random.split(jax.random.key(seed), batch)
    clip_ids = jax.vmap(lambda key: layout.random_clip_ids(key, num_frames))(keys)
    return layout.training_layout(clip_ids, tokens_per_frame)[0]


def sampling_attrs(num_history: int, num_generated: int, tokens_per_frame: int):
    """The sampler's call with CFG: row 0 sees the history, row 1 (history-free) sees it as pad."""
    hist = layout.history_layout(num_history, tokens_per_frame)[0]
    cond = layout.generation_layout(num_history, num_generated, tokens_per_frame)[0]
    free = layout.generation_layout(0, num_generated, tokens_per_frame)[0]
    q_attrs = stack_rows(cond, free)
    prefix = stack_rows(hist, hist._replace(is_pad=jnp.ones_like(hist.is_pad)))
    return q_attrs, concat_attrs(prefix, q_attrs)


def pad_keys(attrs: TokenAttrs, extra: int) -> TokenAttrs:
    """Appends ``extra`` fill keys (as the backend does to reach whole tiles)."""
    return TokenAttrs(*(jnp.pad(a, (0, extra), constant_values=a.dtype == jnp.bool_) for a in attrs))


def kernel_masks(r: KeyRanges, num_sorted_keys: int):
    """The prefix and clip masks as the kernels evaluate them, (Tq, Tk) over the *sorted* keys."""
    k = jnp.arange(num_sorted_keys)[None, :]
    prefix = k < r.clean_end[:, None]
    clip = (k < r.clip_end[:, None]) & (r.query_segment[:, None] == r.key_segment[None, :])
    return prefix, clip


@functools.partial(jax.jit, static_argnames="fill")
def _ranges_read_back(q_attrs: TokenAttrs, k_attrs: TokenAttrs, fill: int):
    """key_ranges of a batch (attrs (B, T)) read back as dense masks over the original keys."""

    def one(q_attrs, k_attrs):
        tk = k_attrs.kind.shape[-1]
        r = key_ranges(q_attrs, pad_keys(k_attrs, fill), num_keys=tk)
        prefix, clip = kernel_masks(r, tk + fill)
        k = jnp.arange(tk + fill)[None, :]
        interval = (k >= r.clip_start[:, None]) & (k < r.clip_end[:, None])
        dense = jnp.zeros(prefix.shape, bool).at[:, r.perm].set(prefix | clip)
        perm_ok = jnp.all(jnp.sort(r.perm) == jnp.arange(tk + fill))
        return dense, visible(q_attrs, k_attrs), clip, interval, jnp.any(prefix & clip), perm_ok

    return jax.vmap(one)(q_attrs, k_attrs)


def check_ranges(q_attrs: TokenAttrs, k_attrs: TokenAttrs, fill: int = 0) -> None:
    """key_ranges reproduces visible() exactly on every example, fill keys seen by nobody."""
    dense, want, clip, interval, overlap, perm_ok = _ranges_read_back(q_attrs, k_attrs, fill)
    tk = k_attrs.kind.shape[-1]
    assert np.all(perm_ok), "perm must be a permutation of the keys"
    # The segment ids cut the clip piece to exactly [clip_start, clip_end).
    np.testing.assert_array_equal(clip, interval)
    assert not np.any(overlap), "the two pieces must be disjoint for the log-sum-exp merge"
    np.testing.assert_array_equal(dense[..., :tk], want)
    assert not np.any(dense[..., tk:]), "fill keys must stay invisible"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_key_ranges_random_partitions(seed):
    attrs = random_training_attrs(seed, batch=32, num_frames=9, tokens_per_frame=3)
    check_ranges(attrs, attrs, fill=5 * (seed % 2))


@pytest.mark.parametrize("partition", [[1] * 7, [7], [2, 5], [5, 2], [1, 3, 1, 2], [3, 1, 1, 1, 1]], ids=str)
def test_key_ranges_fixed_partitions(partition):
    attrs = training_attrs([partition], tokens_per_frame=4)
    check_ranges(attrs, attrs, fill=3)


@pytest.mark.parametrize("num_history", [0, 1, 4])
def test_key_ranges_sampling(num_history):
    q_attrs, k_attrs = sampling_attrs(num_history, num_generated=3, tokens_per_frame=4)
    check_ranges(q_attrs, k_attrs, fill=7)
    if num_history:  # the prefill: history queries over history keys, clean only
        hist = stack_rows(layout.history_layout(num_history, 4)[0])
        check_ranges(hist, hist, fill=2)


def test_tile_runs_are_exact():
    """A tile runs iff it holds a visible pair of its piece (no false skips, no wasted tiles)."""
    tokens_per_frame, block_q, block_kv = 4, 12, 20  # block length 6; 2·10·6 = 120 tokens
    attrs = random_training_attrs(5, batch=16, num_frames=10, tokens_per_frame=tokens_per_frame)
    t = attrs.kind.shape[-1]

    @jax.jit
    @jax.vmap
    def runs_and_tiles(attrs):
        r = key_ranges(attrs, attrs)
        prefix, clip = kernel_masks(r, t)
        pieces = [(prefix, jnp.zeros_like(r.clean_end), r.clean_end), (clip, r.clip_start, r.clip_end)]
        runs = [tile_runs(lo, hi, block_q, block_kv, t // block_kv) for _, lo, hi in pieces]
        tiles = [
            m.reshape(t // block_q, block_q, t // block_kv, block_kv).any(axis=(1, 3)) for m, *_ in pieces
        ]
        return runs, tiles

    runs, tiles = runs_and_tiles(attrs)
    for got, want in zip(runs, tiles, strict=True):
        np.testing.assert_array_equal(got, want)
    assert 0 < np.mean(runs[0] | runs[1]) < 1, "training layouts leave tiles to skip"


def _case(name: str):
    """(q_attrs, k_attrs, block_q, block_kv) of a named case; attrs batched (B, T)."""
    if name == "random_partitions":  # T = 2·12·7 = 168: two 128-tiles each way, padded
        attrs = random_training_attrs(11, batch=2, num_frames=12, tokens_per_frame=5)
        return attrs, attrs, 128, 128
    if name == "fixed_partitions":  # T = 160; one 256-wide query tile, two key tiles
        attrs = training_attrs([[2, 3, 1, 4], [1] * 10], tokens_per_frame=6)
        return attrs, attrs, 256, 128
    if name == "exact_tiles":  # T = 2·8·8 = 128: no padding at all
        attrs = training_attrs([[3, 5]], tokens_per_frame=6)
        return attrs, attrs, 128, 128
    if name == "sampling_cfg":  # Tq = 3·8 = 24, Tk = 9·8 = 72
        q_attrs, k_attrs = sampling_attrs(num_history=6, num_generated=3, tokens_per_frame=6)
        return q_attrs, k_attrs, 128, 128
    if name == "prefill":  # history over history, T = 20·8 = 160; the clip piece is empty
        hist = stack_rows(layout.history_layout(20, 6)[0])
        return hist, hist, 128, 128
    raise KeyError(name)


@pytest.mark.parametrize(
    "name", ["random_partitions", "fixed_partitions", "exact_tiles", "sampling_cfg", "prefill"]
)
def test_matches_xla_values_and_gradients(name):
    q_attrs, k_attrs, block_q, block_kv = _case(name)
    batch, tq = q_attrs.kind.shape
    tk = k_attrs.kind.shape[-1]
    heads, head_dim = 2, 16
    keys = jax.random.split(jax.random.key(7), 4)
    q = jax.random.normal(keys[0], (batch, tq, heads, head_dim), jnp.float32)
    k = jax.random.normal(keys[1], (batch, tk, heads, head_dim), jnp.float32)
    v = jax.random.normal(keys[2], (batch, tk, heads, head_dim), jnp.float32)
    cotangent = jax.random.normal(keys[3], q.shape, jnp.float32)

    def reference(q, k, v):
        return xla_attention(q, k, v, q_attrs, k_attrs, query_chunk=4096)

    def splash(q, k, v):
        return splash_attention(q, k, v, q_attrs, k_attrs, block_q=block_q, block_kv=block_kv, interpret=True)

    @jax.jit
    def value_and_grads(q, k, v):
        out, pullback = jax.vjp(splash, q, k, v)
        return out, pullback(cotangent)

    want, want_pullback = jax.vjp(reference, q, k, v)
    got, got_grads = value_and_grads(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for label, g, w in zip("qkv", got_grads, want_pullback(cotangent), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5, err_msg=f"d{label}")


def test_rejects_tiles_off_the_lane_width():
    attrs = training_attrs([[2, 2]], tokens_per_frame=2)
    x = jnp.zeros((1, attrs.kind.shape[-1], 1, 8))
    with pytest.raises(ValueError, match="multiples of 128"):
        splash_attention(x, x, x, attrs, attrs, block_q=100, interpret=True)
