"""The token vocabulary of Video-GPT's sequences and the block-causal visibility rule (spec §5.1).

The mask is data, never a stored (L, L) matrix: every token carries ``TokenAttrs`` and
:func:`visible` decides, for any (query, key) pair, whether the query may look at the key. The
attention backends (``attention``, ``block_sparse_attention``, ``splash``) and the sequence
layouts (``models/layout.py``) all read the rule from here.

A condition prefix (DESIGN §8: class or text tokens ``[COND 0…P−1]`` before the frames) extends
the rule: a COND query sees the COND keys of lower or equal prefix index; every clean and noisy
query sees every real COND key. COND tokens need no rule of their own: :func:`prefix_attrs` gives
prefix token i the clean rule's attributes of a frame −P + i in clip −1, below every real frame
(>= 0) and clip (>= 0). The clean rule then *is* the extended rule (frame-causal among COND
tokens, "earlier frame" for clean queries, "earlier clip" for noisy ones), so every backend that
implements spec §5.1 implements the prefix too, with no new kernel piece (DESIGN §8, "Range
form"). Their ``kind`` is ``COND``, which every rule reads as "not noisy", i.e. clean.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

CLEAN, NOISY, COND = 0, 1, 2
# The clip of every prefix token: earlier than every clip of the frames (clip ids start at 0).
COND_CLIP = -1
# Within-block order o: noisy block [<|diffusion|>=0, TIME=1, patches=2]; clean block
# [<img>=0, patches=1, </img>=2].
ORDER_MARKER, ORDER_SECOND, ORDER_THIRD = 0, 1, 2


class TokenAttrs(NamedTuple):
    """Per-token attributes; each field (..., T) int32 (``is_pad`` bool)."""

    kind: jax.Array  # CLEAN, NOISY or COND (read as clean by the rule)
    frame: jax.Array  # global frame index; prefix token i of P: i − P (see prefix_attrs)
    clip: jax.Array  # clip index (frames of one clip share it; clips are ordered in time); COND_CLIP
    order: jax.Array  # within-block order o (see ORDER_*); ORDER_MARKER for prefix tokens
    is_pad: jax.Array  # pad tokens: invisible to real queries; pad queries see everything


def prefix_attrs(length: int) -> TokenAttrs:
    """Attributes of a condition prefix of ``length`` real tokens, fields (length,).

    Token i is clean-like at frame i − length (negative: before every frame of the video) in
    clip COND_CLIP, so the rule of :func:`visible` makes the prefix causal in i and visible to
    every frame token (module docstring). Pads among them are set by the caller.
    """
    index = jnp.arange(length, dtype=jnp.int32)
    return TokenAttrs(
        kind=jnp.full((length,), COND, jnp.int32),
        frame=index - length,
        clip=jnp.full((length,), COND_CLIP, jnp.int32),
        order=jnp.full((length,), ORDER_MARKER, jnp.int32),
        is_pad=jnp.zeros((length,), bool),
    )


def concat_attrs(first: TokenAttrs, second: TokenAttrs) -> TokenAttrs:
    """Joins two attribute sequences along the token axis."""
    return TokenAttrs(*(jnp.concatenate([a, b], axis=-1) for a, b in zip(first, second, strict=True)))


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= n."""
    return -(-n // multiple) * multiple


def pad_tokens(x: jax.Array, length: int, fill=0) -> jax.Array:
    """(B, T, ...) -> (B, length, ...), the new tokens set to ``fill``."""
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2), constant_values=fill)


def batched_attrs(attrs: TokenAttrs, batch: int) -> TokenAttrs:
    """Attribute fields (T,) or (B, T) broadcast to (batch, T)."""
    return TokenAttrs(*(jnp.broadcast_to(a, (batch, jnp.shape(a)[-1])) for a in attrs))


def visible(q: TokenAttrs, k: TokenAttrs) -> jax.Array:
    """Spec §5.1: may query q attend key k? q fields (..., Tq), k fields (..., Tk) -> (..., Tq, Tk).

    - k clean: q clean sees earlier clean frames and, in its own frame, keys of order <= its own;
      q noisy sees clean frames of strictly earlier clips.
    - COND tokens take the clean branch; their attributes (:func:`prefix_attrs`) turn it into the
      prefix rule (module docstring).
    - k noisy: only noisy queries of the same clip, with key order <= query order.
    - pad keys are seen by pad queries only; pad queries see every key.
    """

    def col(x):
        return x[..., :, None]

    def row(x):
        return x[..., None, :]

    q_noisy, k_noisy = col(q.kind) == NOISY, row(k.kind) == NOISY
    order_ok = row(k.order) <= col(q.order)
    clean_clean = (row(k.frame) < col(q.frame)) | ((row(k.frame) == col(q.frame)) & order_ok)
    noisy_clean = row(k.clip) < col(q.clip)
    noisy_noisy = (row(k.clip) == col(q.clip)) & order_ok
    rule = jnp.where(k_noisy, q_noisy & noisy_noisy, jnp.where(q_noisy, noisy_clean, clean_clean))
    return col(q.is_pad) | (~row(k.is_pad) & rule)
