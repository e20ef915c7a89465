"""Sequence packing: clip partitions, token attributes and RoPE positions (spec §4).

Every frame is a block of L = S + 2 tokens:
- clean block of frame f: ``[<img>, patch_0 … patch_{S-1}, </img>]``, orders ``[0, 1…1, 2]``;
- noisy block of frame f: ``[<|diffusion|>, TIME, patch_0 … patch_{S-1}]``, orders ``[0, 1, 2…2]``;
both at positions ``f·L … f·L + L − 1`` (the two copies of a frame share positions, spec §4.3).

Attention depends on token attributes only, never on where a token sits, so the training
sequence uses one static order for every partition: ``[clean frames 0…N−1][noisy frames 0…N−1]``
(2N blocks). The clean copies of the last clip, which the official sequence does not contain,
are pad tokens: no real query sees them and their outputs are never read. A partition therefore
changes only the ``clip`` and ``is_pad`` attributes, and every shape is static.

A condition prefix of P tokens (static; DESIGN §8) comes first: ``[COND 0…P−1][clean][noisy]``
at RoPE positions ``0…P−1``, every frame position shifted by P (RoPE is relative, so frame–frame
interactions are those of P = 0). With P = 0 every layout is the one above, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgpt_jax.nn.tokens import (
    CLEAN,
    NOISY,
    ORDER_MARKER,
    ORDER_SECOND,
    ORDER_THIRD,
    TokenAttrs,
    batched_attrs,
    concat_attrs,
    prefix_attrs,
    visible,
)


def random_clip_ids(key: jax.Array, num_frames: int) -> jax.Array:
    """The official random partition as clip ids per frame, (N,) int32.

    K ~ U{2…N}; K−1 distinct cut points drawn uniformly from {1…N−1}; clips are the contiguous
    segments between cuts (``generate_random_list`` of the official data code).
    """
    count_key, perm_key = jax.random.split(key)
    num_clips = jax.random.randint(count_key, (), 2, num_frames + 1)
    cut_points = jax.random.permutation(perm_key, num_frames - 1) + 1  # a random order of 1…N−1
    is_chosen = jnp.arange(num_frames - 1) < num_clips - 1  # the first K−1 of that order
    starts_clip = jnp.zeros((num_frames,), jnp.int32).at[cut_points].set(is_chosen.astype(jnp.int32))
    return jnp.cumsum(starts_clip).astype(jnp.int32)


def per_frame_clip_ids(num_frames: int) -> jax.Array:
    """Stage 1: every frame its own clip. (N,) int32."""
    return jnp.arange(num_frames, dtype=jnp.int32)


def clip_ids_from_partition(partition: Sequence[int]) -> np.ndarray:
    """[b_1, …, b_K] frames per clip -> (N,) int32 clip id of every frame."""
    sizes = np.asarray(partition, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) < 1 or np.any(sizes < 1):
        raise ValueError(f"a partition is a non-empty list of positive clip lengths, got {partition!r}")
    return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)


def expand_blocks(
    kind: jax.Array, frame: jax.Array, clip: jax.Array, is_pad: jax.Array, tokens_per_frame: int
) -> tuple[TokenAttrs, jax.Array]:
    """Per-block attributes (..., B) -> per-token attributes and positions (..., B·L)."""
    s = tokens_per_frame
    block_len = s + 2
    clean_order = jnp.array([ORDER_MARKER] + [ORDER_SECOND] * s + [ORDER_THIRD], jnp.int32)
    noisy_order = jnp.array([ORDER_MARKER, ORDER_SECOND] + [ORDER_THIRD] * s, jnp.int32)
    order = jnp.where((kind == CLEAN)[..., None], clean_order, noisy_order)  # (..., B, L)

    def per_token(x):
        return jnp.broadcast_to(x[..., None], (*x.shape, block_len))

    positions = per_token(frame) * block_len + jnp.arange(block_len, dtype=jnp.int32)
    attrs = TokenAttrs(per_token(kind), per_token(frame), per_token(clip), order, per_token(is_pad))
    flat = lambda x: x.reshape(*x.shape[:-2], -1)  # noqa: E731
    return TokenAttrs(*(flat(a) for a in attrs)), flat(positions)


def with_prefix(attrs: TokenAttrs, positions: jax.Array, prefix: int) -> tuple[TokenAttrs, jax.Array]:
    """Frame tokens (..., T) -> ``[COND 0…P−1]`` + those tokens, (..., P + T), P = ``prefix``.

    The prefix takes positions 0…P−1 and the frame tokens' positions move up by P.
    """
    lead = positions.shape[:-1]
    cond = TokenAttrs(*(jnp.broadcast_to(a, (*lead, prefix)) for a in prefix_attrs(prefix)))
    cond_positions = jnp.broadcast_to(jnp.arange(prefix, dtype=positions.dtype), (*lead, prefix))
    return concat_attrs(cond, attrs), jnp.concatenate([cond_positions, positions + prefix], axis=-1)


def with_prefix_pads(attrs: TokenAttrs, prefix_is_pad: jax.Array) -> TokenAttrs:
    """Marks pads of the condition prefix: attrs (B, P + T), prefix_is_pad (B, P) bool (text
    shorter than its static length; a null text is all pad)."""
    attrs = batched_attrs(attrs, prefix_is_pad.shape[0])
    prefix = prefix_is_pad.shape[-1]
    return attrs._replace(is_pad=attrs.is_pad.at[:, :prefix].set(attrs.is_pad[:, :prefix] | prefix_is_pad))


def training_layout(
    clip_ids: jax.Array, tokens_per_frame: int, prefix: int = 0
) -> tuple[TokenAttrs, jax.Array]:
    """Attributes and positions of the training sequence for clip ids (..., N).

    Returns TokenAttrs (..., P + 2N·L) and positions (..., P + 2N·L) int32 in the order
    ``[COND 0…P−1][clean 0…N−1][noisy 0…N−1]`` (P = ``prefix``, static); the clean copies of the
    last clip are pad.
    """
    n = clip_ids.shape[-1]
    frames = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), clip_ids.shape)
    last_clip = jnp.max(clip_ids, axis=-1, keepdims=True)
    kind = jnp.concatenate([jnp.full_like(clip_ids, CLEAN), jnp.full_like(clip_ids, NOISY)], axis=-1)
    is_pad = jnp.concatenate([clip_ids == last_clip, jnp.zeros_like(clip_ids, dtype=bool)], axis=-1)
    both = lambda x: jnp.concatenate([x, x], axis=-1)  # noqa: E731
    blocks = expand_blocks(kind, both(frames), both(clip_ids.astype(jnp.int32)), is_pad, tokens_per_frame)
    return with_prefix(*blocks, prefix)


def history_layout(num_history: int, tokens_per_frame: int, prefix: int = 0) -> tuple[TokenAttrs, jax.Array]:
    """``[COND 0…P−1]`` then clean blocks of frames 0…n−1, all in clip 0 (sampling: what the KV
    prefill computes). -> TokenAttrs (P + n·L,), positions."""
    frames = jnp.arange(num_history, dtype=jnp.int32)
    zeros = jnp.zeros_like(frames)
    return with_prefix(
        *expand_blocks(zeros + CLEAN, frames, zeros, zeros.astype(bool), tokens_per_frame), prefix
    )


def generation_layout(
    first_frame: int, num_frames: int, tokens_per_frame: int, prefix: int = 0
) -> tuple[TokenAttrs, jax.Array]:
    """Noisy blocks of frames first…first+g−1, one clip after the history, positions shifted past
    a prefix of P tokens (which sits in the KV prefix). -> (g·L,) each."""
    frames = jnp.arange(num_frames, dtype=jnp.int32) + first_frame
    ones = jnp.ones_like(frames)
    attrs, positions = expand_blocks(
        ones * NOISY, frames, ones, jnp.zeros_like(frames, dtype=bool), tokens_per_frame
    )
    return attrs, positions + prefix


def grouped_clip_order(num_frames: int, block_len: int) -> np.ndarray:
    """Token indices that take a noisy clip's blocks ``[<|diffusion|>, TIME, patches]`` per frame
    to ``[all <|diffusion|>][all TIME][all patches]`` (frames in order within each group).

    -> (num_frames·block_len,) int64; the first 2·num_frames are the markers.
    """
    blocks = np.arange(num_frames * block_len).reshape(num_frames, block_len)
    return np.concatenate([blocks[:, 0], blocks[:, 1], blocks[:, 2:].reshape(-1)])


def official_order_index(partition: Sequence[int], tokens_per_frame: int) -> np.ndarray:
    """Indices into the training layout that give the official token order.

    Official order: ``[N(clip 1) C(clip 1) N(clip 2) C(clip 2) … N(clip K)]`` at frame granularity.
    Returns (L_official,) int64 with L_official = (2N − b_K)·(S + 2).
    """
    n = int(np.sum(partition))
    block_len = tokens_per_frame + 2
    blocks, start = [], 0
    for k, size in enumerate(partition):
        frames = range(start, start + size)
        blocks += [n + f for f in frames]  # noisy block of frame f sits at block n + f
        if k != len(partition) - 1:
            blocks += list(frames)
        start += size
    return (np.asarray(blocks)[:, None] * block_len + np.arange(block_len)[None, :]).reshape(-1)


def official_order_mask(partition: Sequence[int], tokens_per_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Our layout and visibility rule, viewed in the official interleaved order.

    Returns ``(mask, position_ids)``: bool (L, L) with mask[q, k] = query q may see key k, and
    int (L,), for L = (2N − b_K)·(S + 2) tokens in the order of :func:`official_order_index`.
    """
    clip_ids = jnp.asarray(clip_ids_from_partition(partition))
    attrs, positions = training_layout(clip_ids, tokens_per_frame)
    index = official_order_index(partition, tokens_per_frame)
    mask = np.asarray(visible(attrs, attrs))
    return mask[np.ix_(index, index)], np.asarray(positions)[index]
