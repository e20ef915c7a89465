"""The condition prefix (DESIGN §8) in the visibility rule, the layouts and every attention backend.

The reference is written here from DESIGN §8 and spec §5.1 in terms of each token's role: a
prefix token with its index, a clean or noisy token with its frame, clip and block slot. It never
reads the library's encoding of the prefix (``TokenAttrs`` of kind COND), so the encoding, the
layouts, ``visible`` and the kernels are all checked against it: the block-sparse and splash
kernels in the Pallas interpreter (values and gradients against ``xla_attention``, values against
a float64 NumPy attention under the reference mask), their tile and range builders exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_block_sparse_attention import assert_matches_reference, expected_classes, np_attention
from test_splash_attention import kernel_masks

from vgpt_jax.models import layout
from vgpt_jax.nn.attention import xla_attention
from vgpt_jax.nn.block_sparse_attention import block_sparse_attention, tile_classes
from vgpt_jax.nn.splash import key_ranges, splash_attention
from vgpt_jax.nn.tokens import COND, TokenAttrs, concat_attrs, visible

# ---------------------------------------------------------------------------------------------
# Independent reference
# ---------------------------------------------------------------------------------------------


class Token(NamedTuple):
    role: str  # "cond", "clean" or "noisy"
    index: int  # cond: prefix index; else the frame
    clip: int  # frames only
    order: int  # frames only: block slot as spec §5.1 (<|diffusion|> 0, TIME 1, patches 2;
    #             <img> 0, patches 1, </img> 2)
    pad: bool
    position: int  # RoPE position: prefix i at i, frame f's slot j at P + f·L + j


def prefix_tokens(pads) -> list[Token]:
    return [Token("cond", i, 0, 0, bool(p), i) for i, p in enumerate(pads)]


def frame_tokens(role: str, frame: int, clip: int, s: int, pad: bool, prefix: int) -> list[Token]:
    orders = [0] + [1] * s + [2] if role == "clean" else [0, 1] + [2] * s
    first = prefix + frame * (s + 2)
    return [Token(role, frame, clip, o, pad, first + j) for j, o in enumerate(orders)]


def training_tokens(clip_ids, s: int, prefix_pads) -> list[Token]:
    """``[COND][clean 0…N−1][noisy 0…N−1]``, the last clip's clean copies pad."""
    p, last = len(prefix_pads), max(clip_ids)
    clean = [frame_tokens("clean", f, c, s, c == last, p) for f, c in enumerate(clip_ids)]
    noisy = [frame_tokens("noisy", f, c, s, False, p) for f, c in enumerate(clip_ids)]
    return prefix_tokens(prefix_pads) + sum(clean + noisy, [])


def may_see(q: Token, k: Token) -> bool:
    """DESIGN §8 on top of spec §5.1."""
    if q.pad:
        return True
    if k.pad:
        return False
    if k.role == "cond":  # causal among the prefix, seen by every frame token
        return q.role != "cond" or k.index <= q.index
    if q.role == "cond":  # the prefix sees no frame token
        return False
    if k.role == "clean":
        if q.role == "clean":
            return k.index < q.index or (k.index == q.index and k.order <= q.order)
        return k.clip < q.clip
    return q.role == "noisy" and q.clip == k.clip and k.order <= q.order


def reference_mask(queries: list[Token], keys: list[Token]) -> np.ndarray:
    return np.array([[may_see(q, k) for k in keys] for q in queries], dtype=bool)


def random_case(rng: np.random.Generator, num_frames: int, s: int, prefix: int):
    """(clip ids, prefix pads) of a random partition and random pads (an all-pad prefix: a null text)."""
    starts_clip = rng.random(num_frames) < 0.5
    starts_clip[0] = False
    starts_clip[rng.integers(1, num_frames)] = True  # at least two clips, as the official partition
    clip_ids = np.cumsum(starts_clip)
    pads = rng.random(prefix) < rng.choice([0.0, 0.4, 1.0])
    return clip_ids.astype(np.int32), pads


def library_training(clip_ids: np.ndarray, s: int, pads: np.ndarray) -> tuple[TokenAttrs, jax.Array]:
    """(B, N) clip ids and (B, P) pads -> the layout's attrs (B, P + 2N·L) with the pads marked."""
    attrs, positions = layout.training_layout(jnp.asarray(clip_ids), s, prefix=pads.shape[-1])
    return layout.with_prefix_pads(attrs, jnp.asarray(pads)), positions


def row(attrs: TokenAttrs, b: int) -> TokenAttrs:
    return TokenAttrs(*(a[b] for a in attrs))


# ---------------------------------------------------------------------------------------------
# Rule and layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_training_layout_and_rule_match_reference(prefix):
    """Random partitions and pads: kinds, pads, positions and visible() equal the reference."""
    rng = np.random.default_rng(prefix)
    num_frames, s = 5, 2
    cases = [random_case(rng, num_frames, s, prefix) for _ in range(6)]
    clip_ids, pads = (np.stack(x) for x in zip(*cases, strict=True))
    attrs, positions = library_training(clip_ids, s, pads)
    mask = np.asarray(visible(attrs, attrs))
    for b, (ids, row_pads) in enumerate(cases):
        tokens = training_tokens(ids.tolist(), s, row_pads)
        got = row(attrs, b)
        np.testing.assert_array_equal(got.kind[:prefix], COND)
        np.testing.assert_array_equal(got.is_pad, [t.pad for t in tokens])
        np.testing.assert_array_equal(positions[b], [t.position for t in tokens])
        np.testing.assert_array_equal(mask[b], reference_mask(tokens, tokens), err_msg=f"{ids} {row_pads}")


def test_empty_prefix_is_the_unconditioned_layout():
    """P = 0 changes nothing; P > 0 leaves the frames' attributes alone and shifts their positions."""
    clip_ids = jnp.asarray([[0, 0, 1, 2], [0, 1, 1, 1]], jnp.int32)
    base_attrs, base_pos = layout.training_layout(clip_ids, 3)
    attrs, positions = layout.training_layout(clip_ids, 3, prefix=0)
    for a, b in zip(attrs, base_attrs, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(positions, base_pos)
    attrs, positions = layout.training_layout(clip_ids, 3, prefix=4)
    for a, b in zip(attrs, base_attrs, strict=True):
        np.testing.assert_array_equal(a[:, 4:], b)
    np.testing.assert_array_equal(positions, np.concatenate([np.tile(np.arange(4), (2, 1)), base_pos + 4], 1))


@pytest.mark.parametrize(("num_history", "prefix"), [(0, 2), (3, 1), (2, 4)])
def test_sampling_layouts_match_reference(num_history, prefix):
    """The prefill's ``[COND][history]`` plus the generated clip: rule and positions as the reference."""
    s, g = 2, 2
    hist_attrs, hist_pos = layout.history_layout(num_history, s, prefix)
    gen_attrs, gen_pos = layout.generation_layout(num_history, g, s, prefix)
    attrs = concat_attrs(hist_attrs, gen_attrs)
    history = sum((frame_tokens("clean", f, 0, s, False, prefix) for f in range(num_history)), [])
    clip = sum(
        (frame_tokens("noisy", f, 1, s, False, prefix) for f in range(num_history, num_history + g)), []
    )
    tokens = prefix_tokens([False] * prefix) + history + clip
    np.testing.assert_array_equal(np.asarray(visible(attrs, attrs)), reference_mask(tokens, tokens))
    np.testing.assert_array_equal(np.concatenate([hist_pos, gen_pos]), [t.position for t in tokens])


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------

NUM_FRAMES, TOKENS_PER_FRAME = 4, 2
HEADS, HEAD_DIM = 2, 16


def random_batch(seed: int, prefix: int):
    """Two random training rows (partitions, pads) and their reference token lists."""
    rng = np.random.default_rng(seed)
    cases = [random_case(rng, NUM_FRAMES, TOKENS_PER_FRAME, prefix) for _ in range(2)]
    clip_ids, pads = (np.stack(x) for x in zip(*cases, strict=True))
    attrs, _ = library_training(clip_ids, TOKENS_PER_FRAME, pads)
    tokens = [training_tokens(ids.tolist(), TOKENS_PER_FRAME, p) for ids, p in cases]
    return attrs, tokens


def cfg_rows(prefix: int):
    """The sampler's denoise call with a prefix: queries the clip; keys the clip then
    ``[COND][history]``, history pad in the second (no-history) row. -> attrs, token lists."""
    s, n, g = TOKENS_PER_FRAME, 3, 2
    clip_attrs, _ = layout.generation_layout(n, g, s, prefix)
    free_attrs, _ = layout.generation_layout(0, g, s, prefix)
    hist_attrs, _ = layout.history_layout(n, s, prefix)
    hidden = hist_attrs._replace(is_pad=hist_attrs.is_pad.at[prefix:].set(True))
    q_attrs = TokenAttrs(*(jnp.stack(x) for x in zip(clip_attrs, free_attrs, strict=True)))
    k_attrs = concat_attrs(q_attrs, TokenAttrs(*(jnp.stack(x) for x in zip(hist_attrs, hidden, strict=True))))
    token_rows = []
    for first, history_pad in ((n, False), (0, True)):
        clip = sum((frame_tokens("noisy", f, 1, s, False, prefix) for f in range(first, first + g)), [])
        history = sum((frame_tokens("clean", f, 0, s, history_pad, prefix) for f in range(n)), [])
        token_rows.append((clip, clip + prefix_tokens([False] * prefix) + history))
    return q_attrs, k_attrs, token_rows


def check_values_against_numpy(got: jax.Array, q, k, v, token_rows) -> None:
    for b, (queries, keys) in enumerate(token_rows):
        want = np_attention(q[b], k[b], v[b], reference_mask(queries, keys))
        np.testing.assert_allclose(np.asarray(got[b]), want, rtol=2e-5, atol=2e-5)


def qkv(seed: int, batch: int, tq: int, tk: int):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(keys[0], (batch, tq, HEADS, HEAD_DIM), jnp.float32),
        jax.random.normal(keys[1], (batch, tk, HEADS, HEAD_DIM), jnp.float32),
        jax.random.normal(keys[2], (batch, tk, HEADS, HEAD_DIM), jnp.float32),
    )


BLOCK_SPARSE = dict(block_q=16, block_k=16, interpret=True)


@pytest.mark.parametrize(("seed", "prefix"), [(0, 1), (1, 3)])
def test_block_sparse_training_rows(seed, prefix):
    """Values and gradients against xla; values against NumPy; tile classes exact."""
    attrs, tokens = random_batch(seed, prefix)
    assert_matches_reference(attrs, attrs, seed=seed)
    t = attrs.kind.shape[-1]
    q, k, v = qkv(seed, 2, t, t)
    got = jax.jit(lambda q, k, v: block_sparse_attention(q, k, v, attrs, attrs, **BLOCK_SPARSE))(q, k, v)
    check_values_against_numpy(got, q, k, v, [(row, row) for row in tokens])
    classes = np.asarray(tile_classes(attrs, attrs, 16, 16))
    for b, row_tokens in enumerate(tokens):
        want = expected_classes(reference_mask(row_tokens, row_tokens), 16, 16)
        np.testing.assert_array_equal(classes[b], want)


def test_block_sparse_cfg_rows():
    q_attrs, k_attrs, token_rows = cfg_rows(prefix=2)
    assert_matches_reference(q_attrs, k_attrs, seed=5)
    q, k, v = qkv(5, 2, q_attrs.kind.shape[-1], k_attrs.kind.shape[-1])
    got = block_sparse_attention(q, k, v, q_attrs, k_attrs, **BLOCK_SPARSE)
    check_values_against_numpy(got, q, k, v, token_rows)


def splash_values_and_grads(q_attrs, k_attrs, q, k, v, cotangent):
    def splash(q, k, v):
        return splash_attention(q, k, v, q_attrs, k_attrs, block_q=128, block_kv=128, interpret=True)

    def reference(q, k, v):
        return xla_attention(q, k, v, q_attrs, k_attrs, query_chunk=4096)

    got, pullback = jax.vjp(splash, q, k, v)
    want, want_pullback = jax.vjp(reference, q, k, v)
    return got, want, pullback(cotangent), want_pullback(cotangent)


@pytest.mark.parametrize("case", ["training", "cfg_rows"])
def test_splash_matches_xla_and_numpy(case):
    if case == "training":
        q_attrs, token_rows = random_batch(2, prefix=3)
        k_attrs, token_rows = q_attrs, [(row, row) for row in token_rows]
    else:
        q_attrs, k_attrs, token_rows = cfg_rows(prefix=3)
    q, k, v = qkv(3, 2, q_attrs.kind.shape[-1], k_attrs.kind.shape[-1])
    cotangent = jax.random.normal(jax.random.key(9), q.shape)
    got, want, grads, want_grads = jax.jit(splash_values_and_grads)(q_attrs, k_attrs, q, k, v, cotangent)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for label, g, w in zip("qkv", grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5, err_msg=f"d{label}")
    check_values_against_numpy(got, q, k, v, token_rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splash_ranges_are_the_reference_mask(seed):
    """The range form read back over the original keys is the reference mask; a prefix query's
    range ends just after its own prefix key (k_end = index + 1, DESIGN §8)."""
    prefix = 3
    attrs, tokens = random_batch(10 + seed, prefix)
    t = attrs.kind.shape[-1]
    for b, row_tokens in enumerate(tokens):
        ranges = key_ranges(row(attrs, b), row(attrs, b))
        pieces = kernel_masks(ranges, t)
        dense = np.zeros((t, t), bool)
        dense[:, np.asarray(ranges.perm)] = np.asarray(pieces[0] | pieces[1])
        np.testing.assert_array_equal(dense, reference_mask(row_tokens, row_tokens))
        real = ~np.array([tok.pad for tok in row_tokens[:prefix]])
        # with every prefix key real, that is index + 1; pad keys sort after all real ones
        np.testing.assert_array_equal(np.asarray(ranges.clean_end[:prefix])[real], np.cumsum(real)[real])
