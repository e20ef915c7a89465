"""Block-sparse Pallas attention (Pallas interpreter on the CPU) against the ``xla`` reference.

Values and gradients are compared with :func:`xla_attention` in fp32 on the training, history and
generation layouts; the tile schedule is compared with a dense NumPy evaluation of the rule
written here from the spec (§5.1), not with the library's ``visible``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgpt_jax.models import layout
from vgpt_jax.nn import block_sparse_attention as block_sparse_module
from vgpt_jax.nn import block_sparse_hopper
from vgpt_jax.nn.attention import KernelTiles, KVPrefix, attend, clip_attention, xla_attention
from vgpt_jax.nn.block_sparse_attention import (
    TILE_EMPTY,
    TILE_FULL,
    TILE_PARTIAL,
    KernelConfig,
    _prepare_tokens,
    block_sparse_attention,
    head_dim_blocks,
    range_codes,
    tile_classes,
)
from vgpt_jax.nn.block_sparse_hopper import range_visible
from vgpt_jax.nn.tokens import NOISY, TokenAttrs, concat_attrs, prefix_attrs

HEADS, HEAD_DIM = 2, 16
SMALL = dict(  # every kernel at 16 x 16 tiles, 4 warps: small shapes, few interpreter steps
    block_q=16,
    block_k=16,
    num_warps=4,
    dkv=KernelConfig(16, 16, 4, 2),
    dq=KernelConfig(16, 16, 4, 2),
    interpret=True,
)


# ---------------------------------------------------------------------------------------------
# Independent dense rule (NumPy)
# ---------------------------------------------------------------------------------------------


def np_visible(q: dict, k: dict) -> np.ndarray:
    """Spec §5.1 for one sequence: q/k dicts of (T,) arrays -> bool (Tq, Tk).

    A clean key is seen by clean queries of a later frame or of its own frame with an order at
    least the key's, and by noisy queries of a later clip; a noisy key only by noisy queries of
    its own clip with an order at least the key's. Pad queries see every key; pad keys are seen
    by pad queries only.
    """
    qi = {name: np.asarray(value)[:, None] for name, value in q.items()}  # queries on rows
    kj = {name: np.asarray(value)[None, :] for name, value in k.items()}  # keys on columns
    q_noisy, k_noisy = qi["kind"] == NOISY, kj["kind"] == NOISY
    order_ok = kj["order"] <= qi["order"]
    sees_clean = np.where(
        q_noisy,
        kj["clip"] < qi["clip"],
        (kj["frame"] < qi["frame"]) | ((kj["frame"] == qi["frame"]) & order_ok),
    )
    sees_noisy = q_noisy & (kj["clip"] == qi["clip"]) & order_ok
    real = np.where(k_noisy, sees_noisy, sees_clean) & ~kj["is_pad"].astype(bool)
    return np.where(qi["is_pad"].astype(bool), True, real)


def as_numpy(attrs: TokenAttrs, row: int | None = None) -> dict:
    fields = {name: np.asarray(value) for name, value in attrs._asdict().items()}
    return {name: (value[row] if row is not None else value) for name, value in fields.items()}


def expected_classes(mask: np.ndarray, block_q: int, block_k: int) -> np.ndarray:
    """Tile classes from a dense mask; positions past the end are void (no query, invisible key)."""
    tq, tk = mask.shape
    nq, nk = -(-tq // block_q), -(-tk // block_k)
    padded = np.zeros((nq * block_q, nk * block_k), bool)
    padded[:tq, :tk] = mask
    real_q = np.arange(nq * block_q) < tq
    out = np.empty((nq, nk), np.int32)
    for i in range(nq):
        rows = slice(i * block_q, (i + 1) * block_q)
        for j in range(nk):
            tile = padded[rows, j * block_k : (j + 1) * block_k][real_q[rows]]
            if not tile.any():
                out[i, j] = TILE_EMPTY
            else:
                out[i, j] = TILE_FULL if tile.all() else TILE_PARTIAL
    return out


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


classes_of = jax.jit(tile_classes, static_argnums=(2, 3), static_argnames="skip_pad_queries")


def random_clip_ids(rng: np.random.Generator, num_frames: int, count: int) -> np.ndarray:
    """(count, N) clip ids of the official partition law (K ~ U{2…N}, K−1 distinct cuts), in NumPy."""
    out = np.zeros((count, num_frames), np.int32)
    for row in out:
        cuts = rng.choice(np.arange(1, num_frames), rng.integers(2, num_frames + 1) - 1, replace=False)
        row[cuts] = 1
    return np.cumsum(out, axis=1, dtype=np.int32)


def batched(attrs: TokenAttrs, batch: int) -> TokenAttrs:
    return TokenAttrs(*(jnp.broadcast_to(a, (batch, a.shape[-1])) for a in attrs))


def random_qkv(seed: int, batch: int, tq: int, tk: int, head_dim: int = HEAD_DIM):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, tq, HEADS, head_dim), jnp.float32)
    k = jax.random.normal(keys[1], (batch, tk, HEADS, head_dim), jnp.float32)
    v = jax.random.normal(keys[2], (batch, tk, HEADS, head_dim), jnp.float32)
    cotangent = jax.random.normal(keys[3], q.shape, jnp.float32)
    return q, k, v, cotangent


@functools.partial(jax.jit, static_argnums=(6,))
def value_and_grads(q, k, v, cotangents, q_attrs, k_attrs, options):
    """Ours and the reference: outputs and (dq, dk, dv) of ``cotangents`` (ours, reference).
    Attributes are traced arguments, so layouts of one shape share one compiled program."""

    def ours(q, k, v):
        return block_sparse_attention(q, k, v, q_attrs, k_attrs, **dict(options))

    def reference(q, k, v):
        return xla_attention(q, k, v, q_attrs, k_attrs, query_chunk=4096)

    got, got_vjp = jax.vjp(ours, q, k, v)
    want, want_vjp = jax.vjp(reference, q, k, v)
    return got, want, got_vjp(cotangents[0]), want_vjp(cotangents[1])


def assert_matches_reference(q_attrs, k_attrs, seed=0, row_weight=None, head_dim=HEAD_DIM, **kwargs):
    """Values and (dq, dk, dv) of a random cotangent vs xla_attention, fp32.

    ``row_weight`` (B, Tq) in {0, 1}: rows with 0 are not compared and the reference gets no
    cotangent there (ours gets the full one: it must ignore the rows it calls unspecified).
    """
    batch, tq = q_attrs.kind.shape
    q, k, v, cotangent = random_qkv(seed, batch, tq, k_attrs.kind.shape[-1], head_dim)
    ref_cotangent = cotangent if row_weight is None else cotangent * row_weight[:, :, None, None]
    options = tuple(sorted({**SMALL, **kwargs}.items()))
    got, want, got_grads, want_grads = value_and_grads(
        q, k, v, (cotangent, ref_cotangent), q_attrs, k_attrs, options
    )
    weight = 1.0 if row_weight is None else row_weight[:, :, None, None]
    np.testing.assert_allclose(got * weight, want * weight, atol=2e-5, rtol=1e-4)
    for name, g, w in zip(("dq", "dk", "dv"), got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Values and gradients
# ---------------------------------------------------------------------------------------------


def test_training_layout_fixed_and_random_partition():
    # Row 0: a fixed partition; row 1: the official random partition. 6 frames of 8 tokens.
    fixed = jnp.asarray(layout.clip_ids_from_partition([2, 1, 3]))
    rand = layout.random_clip_ids(jax.random.key(7), 6)
    attrs, _ = layout.training_layout(jnp.stack([fixed, rand]), 6)
    assert_matches_reference(attrs, attrs)


def test_lengths_not_divisible_and_mixed_tiles():
    # 5 frames of 7 tokens: 70 tokens, no multiple of any tile; different tiles per kernel.
    attrs, _ = layout.training_layout(jnp.asarray(layout.clip_ids_from_partition([1, 2, 2]))[None], 5)
    assert attrs.kind.shape[-1] % 16 != 0
    assert_matches_reference(
        attrs,
        attrs,
        seed=1,
        block_q=16,
        block_k=32,
        dkv=KernelConfig(32, 16, 4, 2),
        dq=KernelConfig(16, 16, 4, 1),
    )


def test_history_and_generation_keys_are_prefix_plus_own():
    # Sampling: queries are the generated clip's noisy frames, keys = clean history + the clip.
    history, _ = layout.history_layout(3, 5)  # 21 tokens
    generation, _ = layout.generation_layout(3, 2, 5)  # 14 tokens
    keys = concat_attrs(history, generation)
    assert_matches_reference(batched(generation, 2), batched(keys, 2), seed=2)


def test_token_order_does_not_matter():
    # Shuffled training sequences: tiles mix clips, kinds and frames, so most are partial.
    # (Same shapes as the test above: the compiled program is shared.)
    rng = np.random.default_rng(3)
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(rng, 6, 2)), 6)
    perm = jnp.asarray(np.stack([rng.permutation(attrs.kind.shape[-1]) for _ in range(2)]))
    shuffled = TokenAttrs(*(jnp.take_along_axis(a, perm, axis=1) for a in attrs))
    assert_matches_reference(shuffled, shuffled, seed=3)


def test_skip_pad_queries_keeps_real_rows():
    # With pad queries skipped, real rows match, and so do all gradients: ours ignores the pad
    # rows' cotangent, the reference gets none there.
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(np.random.default_rng(4), 6, 2)), 6)
    real = (~attrs.is_pad).astype(jnp.float32)
    assert_matches_reference(attrs, attrs, seed=4, row_weight=real, skip_pad_queries=True)
    full = classes_of(attrs, attrs, 16, 16)
    skipped = classes_of(attrs, attrs, 16, 16, skip_pad_queries=True)
    assert np.sum(skipped != TILE_EMPTY) < np.sum(full != TILE_EMPTY)


def test_head_dim_blocks():
    # at most two power-of-two blocks >= 16, largest first; else one block of the next power of two
    assert head_dim_blocks(96) == (64, 32)  # the 3.76 B model's heads: no padded columns
    assert head_dim_blocks(128) == (128,)
    assert head_dim_blocks(80) == (64, 16)
    assert head_dim_blocks(48) == (32, 16)
    assert head_dim_blocks(112) == (128,)  # 64 + 32 + 16 would be three
    assert head_dim_blocks(24) == (32,)  # rounded up to 16 first: 32
    assert head_dim_blocks(8) == (16,)


@pytest.mark.parametrize("head_dim", [48, 24])
def test_head_dim_in_column_blocks(head_dim):
    # 48 = 32 + 16: every q, k, v, do read as two column blocks; 24: one block of 32, zero-padded
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(np.random.default_rng(6), 6, 2)), 6)
    assert_matches_reference(attrs, attrs, seed=6, head_dim=head_dim)


def test_bf16_inputs_keep_dtype():
    attrs, _ = layout.training_layout(jnp.asarray(layout.clip_ids_from_partition([1, 2]))[None], 6)
    q, k, v, _ = random_qkv(5, 1, attrs.kind.shape[-1], attrs.kind.shape[-1])
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    got = jax.jit(lambda q, k, v: block_sparse_attention(q, k, v, attrs, attrs, **SMALL))(q, k, v)
    want = xla_attention(q, k, v, attrs, attrs, query_chunk=4096)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_frames", "tokens_per_frame", "block_q", "block_k"),
    [(6, 6, 16, 16), (7, 12, 16, 32), (5, 30, 32, 16), (9, 3, 16, 16)],
)
def test_tile_classes_exact_on_training_layout(num_frames, tokens_per_frame, block_q, block_k):
    clip_ids = random_clip_ids(np.random.default_rng(num_frames * 100 + tokens_per_frame), num_frames, 6)
    clip_ids[0] = np.arange(num_frames)  # stage 1: one clip per frame
    attrs, _ = layout.training_layout(jnp.asarray(clip_ids), tokens_per_frame)
    got = np.asarray(classes_of(attrs, attrs, block_q, block_k))
    for row in range(clip_ids.shape[0]):
        tokens = as_numpy(attrs, row)
        want = expected_classes(np_visible(tokens, tokens), block_q, block_k)
        np.testing.assert_array_equal(got[row], want, err_msg=f"clip ids {clip_ids[row]}")


def test_tile_classes_exact_on_sampling_layout():
    history, _ = layout.history_layout(4, 9)  # 44 tokens
    generation, _ = layout.generation_layout(4, 3, 9)  # 33 tokens
    keys = concat_attrs(history, generation)
    got = np.asarray(classes_of(generation, keys, 16, 16))[0]
    want = expected_classes(np_visible(as_numpy(generation), as_numpy(keys)), 16, 16)
    np.testing.assert_array_equal(got, want)


def test_tile_classes_sound_in_any_token_order():
    # Shuffled tokens: the summaries may call an empty or full tile partial, never the reverse.
    rng = np.random.default_rng(1)
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(rng, 6, 1)), 5)
    for _ in range(3):
        perm = rng.permutation(attrs.kind.shape[-1])
        shuffled = TokenAttrs(*(a[:, perm] for a in attrs))
        got = np.asarray(classes_of(shuffled, shuffled, 16, 16))[0]
        tokens = as_numpy(shuffled, 0)
        want = expected_classes(np_visible(tokens, tokens), 16, 16)
        assert np.all((got == want) | (got == TILE_PARTIAL))


@pytest.mark.parametrize("skip_pad_queries", [False, True])
def test_range_codes_reproduce_the_rule(skip_pad_queries):
    # The Hopper kernel's four comparisons against the NumPy rule: a condition prefix (COND tokens
    # with negative frames, clip -1), pad tokens, void tokens past the end, shuffled token order.
    rng = np.random.default_rng(3)
    frames, _ = layout.training_layout(jnp.asarray(random_clip_ids(rng, 7, 1)), 5)
    prefix = prefix_attrs(4)
    prefix = prefix._replace(is_pad=jnp.asarray([False, False, True, False]))
    attrs = concat_attrs(TokenAttrs(*(a[None] for a in prefix)), frames)
    perm = rng.permutation(attrs.kind.shape[-1])
    for order in (np.arange(attrs.kind.shape[-1]), perm):
        tokens = TokenAttrs(*(a[:, order] for a in attrs))
        length = tokens.kind.shape[-1]
        padded = length + 13  # void tokens
        qt = _prepare_tokens(tokens, 1, padded, pad_is_void=skip_pad_queries)
        kt = _prepare_tokens(tokens, 1, padded, pad_is_void=False)
        bounds, codes = (np.asarray(x[0], np.int64) for x in range_codes(qt, kt))
        got = range_visible(tuple(c[None, :] for c in codes), tuple(b[:, None] for b in bounds))
        rule = np_visible(as_numpy(tokens, 0), as_numpy(tokens, 0))
        if skip_pad_queries:  # pad queries are void: they see nothing
            rule &= ~np.asarray(tokens.is_pad[0])[:, None]
        want = np.zeros((padded, padded), bool)
        want[:length, :length] = rule
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("head_dim", [96, 128])
def test_hopper_kernels_lower_for_cuda(head_dim):
    # The Mosaic GPU kernel cannot run here; lowering it for CUDA runs its layout inference, shared
    # memory transforms and barrier code, which break first when Pallas' Mosaic GPU API moves.
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(np.random.default_rng(4), 4, 1)), 20)
    length = attrs.kind.shape[-1]
    x = jax.ShapeDtypeStruct((1, length, 2, head_dim), jnp.bfloat16)

    def loss(q, k, v):
        out = block_sparse_attention(q, k, v, attrs, attrs, skip_pad_queries=True, hopper_forward=True)
        return out.astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    text = grads.trace(x, x, x).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("mosaic_gpu_v2") == 1  # the forward; dK/dV and dQ are Triton's
    assert text.count("__gpu$xla.gpu.triton") == 2
    # its outputs pass a barrier, which keeps XLA's dynamic-slice fusion from running it twice
    assert "stablehlo.optimization_barrier" in text

    def loss_hopper_dq(q, k, v):
        out = block_sparse_attention(
            q, k, v, attrs, attrs, skip_pad_queries=True, hopper_forward=True, hopper_dq=True
        )
        return out.astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss_hopper_dq, argnums=(0, 1, 2)))
    text = grads.trace(x, x, x).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("mosaic_gpu_v2") == 2  # the forward and dQ
    assert text.count("__gpu$xla.gpu.triton") == 1  # dK/dV

    def loss_all_hopper(q, k, v):
        out = block_sparse_attention(
            q, k, v, attrs, attrs, skip_pad_queries=True, hopper_forward=True, hopper_dq=True, hopper_dkv=True
        )
        return out.astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss_all_hopper, argnums=(0, 1, 2)))
    text = grads.trace(x, x, x).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("mosaic_gpu_v2") == 3 and "__gpu$xla.gpu.triton" not in text
    with pytest.raises(ValueError, match="no interpreter"):
        block_sparse_attention(
            jnp.zeros(x.shape, x.dtype), *[jnp.zeros(x.shape, x.dtype)] * 2, attrs, attrs,
            hopper_forward=True, interpret=True,
        )  # fmt: skip


def test_realistic_layout_skips_most_tiles():
    # Stage 2-4 sizes: 48 frames of 222 tokens (21,312 tokens), 128 x 128 tiles.
    attrs, _ = layout.training_layout(jnp.asarray(random_clip_ids(np.random.default_rng(2), 48, 4)), 220)
    classes = np.asarray(classes_of(attrs, attrs, 128, 128))
    nonempty = np.mean(classes != TILE_EMPTY, axis=(1, 2))
    assert np.all(nonempty < 0.4), nonempty
    # Most non-empty tiles need no mask evaluation.
    assert np.all(
        np.sum(classes == TILE_FULL, axis=(1, 2)) > 2 * np.sum(classes == TILE_PARTIAL, axis=(1, 2))
    )


# ---------------------------------------------------------------------------------------------
# The sampler's grouped-clip attention (dense kernel for patches, masked rows for the markers)
# ---------------------------------------------------------------------------------------------


def np_attention(q, k, v, mask):
    """Float64 softmax attention of one row: q (Tq, H, D), k/v (Tk, H, D), mask (Tq, Tk)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(mask[None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", probs, v)


def _clip_rows(frames, tokens_per_frame, history_frames, history_seen):
    """Query, clip-key and history-key attributes of a grouped clip's rows, (rows, T) each.

    Row r is a clip after ``history_frames`` frames whose first ``history_seen[r]`` history
    tokens are real (the rest pad); a row that sees no history is a history-free clip (frame 0).
    """
    order = layout.grouped_clip_order(frames, tokens_per_frame + 2)
    history, _ = layout.history_layout(history_frames, tokens_per_frame)
    queries, histories = [], []
    for seen in history_seen:
        clip, _ = layout.generation_layout(history_frames if seen else 0, frames, tokens_per_frame)
        queries.append(TokenAttrs(*(a[order] for a in clip)))
        histories.append(history._replace(is_pad=jnp.arange(history.is_pad.shape[0]) >= seen))
    return (
        TokenAttrs(*(jnp.stack([getattr(r, f) for r in rows]) for f in TokenAttrs._fields))
        for rows in (queries, histories)
    )


@pytest.mark.parametrize(
    "history_seen, history_batch",
    [
        ((None, 0), 1),  # the CFG rows: the conditional row sees the history, the free row none
        ((None, 7), 2),  # each row its own history, seen in part (a condition prefix's keys)
    ],
)
def test_clip_attention_matches_numpy_on_both_cfg_rows(history_seen, history_batch):
    """A 3-frame clip in grouped order after a 4-frame history: the clip's own keys and the
    cached history (never joined: merged by log-sum-exps) against float64 softmax attention over
    the joined keys under the independent rule."""
    frames, tokens_per_frame, history_frames = 3, 5, 4
    history_len = history_frames * (tokens_per_frame + 2)
    seen = tuple(history_len if s is None else s for s in history_seen)
    q_attrs, h_attrs = _clip_rows(frames, tokens_per_frame, history_frames, seen)
    clip_len = q_attrs.kind.shape[-1]
    q, k, v, _ = random_qkv(7, 2, clip_len, clip_len + history_len)
    history = KVPrefix(k[:history_batch, clip_len:], v[:history_batch, clip_len:])

    got = clip_attention(
        q, k[:, :clip_len], v[:, :clip_len], q_attrs, q_attrs, history, h_attrs, special_queries=2 * frames
    )
    no_history = clip_attention(
        q, k[:, :clip_len], v[:, :clip_len], q_attrs, q_attrs, special_queries=2 * frames
    )
    empty = KVPrefix(k[:history_batch, :0], v[:history_batch, :0])  # the first clip: no history yet
    no_frames = clip_attention(
        q, k[:, :clip_len], v[:, :clip_len], q_attrs, q_attrs, empty,
        TokenAttrs(*(a[:, :0] for a in h_attrs)), special_queries=2 * frames,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(no_frames), np.asarray(no_history))
    k_attrs = concat_attrs(q_attrs, h_attrs)
    for row in range(2):
        mask = np_visible(
            *({f: np.asarray(getattr(a, f)[row]) for f in TokenAttrs._fields} for a in (q_attrs, k_attrs))
        )
        # the premise, by the independent rule: patches see the whole clip, and the history's
        # real keys; the markers see some of the clip's keys and every real history key
        patches = mask[2 * frames :]
        assert patches[:, :clip_len].all()
        assert (patches[:, clip_len:] == (np.arange(history_len) < seen[row])).all()
        assert (mask[:, clip_len:] == (np.arange(history_len) < seen[row])).all()
        assert not mask[: 2 * frames, :clip_len].all()  # the markers' rows are masked
        h = row % history_batch
        keys = np.concatenate([k[row, :clip_len], k[h, clip_len:]])
        values = np.concatenate([v[row, :clip_len], v[h, clip_len:]])
        want = np_attention(q[row], keys, values, mask)
        np.testing.assert_allclose(np.asarray(got[row]), want, rtol=2e-5, atol=2e-5)
        want_alone = np_attention(q[row], k[row, :clip_len], v[row, :clip_len], mask[:, :clip_len])
        np.testing.assert_allclose(np.asarray(no_history[row]), want_alone, rtol=2e-5, atol=2e-5)


def test_clip_attention_under_sequence_sharding_equals_one_device():
    """Queries over ``sequence`` (2 of 8 devices; heads over ``tensor``): the clip's 28 queries split,
    the history's 35 keys (which no mesh axis divides) whole, the same values as on one device."""
    q_attrs, h_attrs = _clip_rows(4, 5, 5, (35, 0))
    clip_len = q_attrs.kind.shape[-1]
    q, k, v, _ = random_qkv(11, 2, clip_len, clip_len + 35)
    args = (
        q,
        k[:, :clip_len],
        v[:, :clip_len],
        q_attrs,
        q_attrs,
        KVPrefix(k[:1, clip_len:], v[:1, clip_len:]),
        h_attrs,
    )
    want = clip_attention(*args, special_queries=8)
    mesh = jax.make_mesh(
        (1, 2, 4), ("data", "sequence", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3
    )
    with jax.set_mesh(mesh):
        got = jax.jit(lambda *a: clip_attention(*a, special_queries=8))(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_auto_forward_kernel_is_hopper_only_on_sm90_in_half_precision(monkeypatch):
    assert not block_sparse_hopper.chosen("auto", jnp.bfloat16)  # this CPU
    assert block_sparse_hopper.chosen("hopper", jnp.float32)  # asked for: forward() refuses fp32
    assert not block_sparse_hopper.chosen("triton", jnp.bfloat16)

    class FakeGpu:
        platform = "gpu"

        def __init__(self, capability):
            self.compute_capability = capability

    for capability, dtype, want in (
        ("9.0", jnp.bfloat16, True),
        ("9.0", jnp.float16, True),
        ("9.0", jnp.float32, False),
        ("8.0", jnp.bfloat16, False),
        ("10.0", jnp.bfloat16, False),
    ):
        monkeypatch.setattr(jax, "devices", lambda c=capability: [FakeGpu(c)])
        assert block_sparse_hopper.chosen("auto", dtype) is want, (capability, dtype)


def test_hopper_forward_refuses_fp32():
    x = jnp.zeros((1, 128, 1, 32), jnp.float32)
    bounds, codes = jnp.zeros((1, 4, 128), jnp.int32), jnp.zeros((1, 3, 128), jnp.int32)
    rows, order = jnp.zeros((1, 1, 3), jnp.int32), jnp.zeros((1, 1), jnp.int32)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        block_sparse_hopper.forward(x, x, x, bounds, codes, rows, order, block_k=128, stages=2, scale=1.0)


@pytest.mark.parametrize(
    ("forward", "dq", "dkv", "want"),
    [
        ("triton", "hopper", "triton", {"hopper_dq"}),
        ("hopper", "triton", "hopper", {"hopper_forward", "hopper_dkv"}),
        ("auto", "auto", "auto", {"hopper_forward", "hopper_dq", "hopper_dkv"}),
    ],
)
def test_attend_passes_the_chosen_kernels(monkeypatch, forward, dq, dkv, want):
    """Config -> KernelTiles -> attend -> block_sparse_attention's flags, on a pretend Hopper GPU."""
    calls = []
    monkeypatch.setattr(
        block_sparse_module, "block_sparse_attention", lambda q, *a, **kw: calls.append(kw) or q
    )
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # not the interpreter
    monkeypatch.setattr(block_sparse_hopper, "chosen", lambda kernel, dtype: kernel in ("hopper", "auto"))
    tiles = KernelTiles(
        block_sparse=((64, 64, 4, 3),) * 3,
        splash=(512, 512),
        forward_kernel=forward,
        dq_kernel=dq,
        dkv_kernel=dkv,
    )
    x = jnp.zeros((1, 16, 2, 32), jnp.bfloat16)
    attrs = TokenAttrs(*(np.zeros(16, np.int32) for _ in range(4)), np.zeros(16, bool))
    attend(x, x, x, attrs, attrs, backend="block_sparse", query_chunk=16, tiles=tiles)
    (kw,) = calls
    assert {flag for flag in ("hopper_forward", "hopper_dq", "hopper_dkv") if kw.get(flag)} == want
    assert kw["interpret"] is False and kw["skip_pad_queries"] is True
