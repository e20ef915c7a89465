"""TPU attention backend: splash attention with the visibility rule evaluated from token attributes.

Why not the dense dynamic mask
------------------------------
Splash accepts a traced (H, Tq, Tk) boolean mask (``process_dynamic_mask``), but it then stores
*every* (block_q, block_kv) tile as a "partial" mask block, and the forward/dq and dkv kernels each
need their own copy (the dkv copy is transposed): about 3·Tq·Tk bytes per call, 3.7 GB per layer at
35k tokens, rebuilt every layer. This module never forms an (L, L) array.

Approach: sorted keys, two interval pieces, log-sum-exp merge
-------------------------------------------------------------
Attention does not depend on the order of the keys, so the keys (with their values) are permuted
once per call into the order

    [clean keys by (frame, order)] [noisy keys by (clip, order)] [pad keys] [fill keys]

(fill keys are the ones appended here to reach a multiple of the block). Because clips are
contiguous runs of frames ordered in time (clip non-decreasing in frame, a ``TokenAttrs``
invariant) and both block patterns have non-decreasing ``order``, every query's visible keys become
two intervals of that order (DESIGN §4, "range form"):

- *prefix piece*: ``[0, clean_end[q])`` — a clean query sees the clean keys with
  ``(frame, order) <= (its frame, its order)``; a noisy query the clean keys of earlier clips; a pad
  query every original key (clean, noisy and pad, not the fill);
- *clip piece*: ``[clip_start[q], clip_end[q])`` — a noisy query sees the noisy keys of its own clip
  with ``order <= its order``; other queries see nothing here.

The bounds come from ``searchsorted`` on the sorted key codes, O(T log T). Each piece is one splash
call whose in-kernel mask is ``mask_function(q_sequence, k_index)`` with a per-query bound carried
in ``MaskInfo.q_sequence``: ``k_index < clean_end[q]`` for the prefix piece; for the clip piece
``k_index < clip_end[q]`` AND segment ids (query: its clip; key: its clip for noisy keys, -1
otherwise), which removes everything below ``clip_start[q]``. One splash call cannot hold both
intervals (one int32 per query cannot carry three token indices at 35k tokens, and segment
equality cannot express "earlier clip"), so the two calls are merged exactly by log-sum-exp. The
merged backward is the flash backward of each piece evaluated with the *merged* output and
log-sum-exp (the softmax Jacobian couples pieces only through those), so both pieces run splash's
own dq and dkv kernels and their gradients add.

Block skipping is data too: for each piece a (Tq/bq, Tk/bk) table says which tiles hold any
visible pair (from the per-query intervals with a difference array), and ``data_next`` repeats the
last used tile index on skipped steps so they issue no DMA.

Memory per call (per batch element, H heads, head dim D): the permuted K and V (2·Tk·H·D), the two
piece outputs and log-sum-exps (2·Tq·H·(D + 1) floats), int32 vectors of length Tq and Tk, and six
small (Tq/bq, Tk/bk) int8/int16 tables — linear in the sequence length. At 35k tokens with
512-blocks the tables are 69 x 69 entries.

Caveats
-------
- The grid is not shrunk to the visible tiles (its width must be static while the partition is
  random): skipped tiles still cost a grid step each, for each of the two pieces. Prefer large
  blocks (512-1024) at long sequence lengths.
- The backward uses splash's private ``_splash_attention_bwd`` (the public kernel cannot return a
  differentiable log-sum-exp, which the merge needs); the tests pin its behaviour at the installed
  JAX.
- A query that sees no key at all (impossible in the layouts of ``layout.py``: every real query
  sees itself) gets a zero output, where the dense reference averages all values.
- The batch is ``vmap``-ped; Pallas runs batched scalar-prefetch kernels as a loop over examples.
  On a device mesh, call this inside ``shard_map`` (batch / heads sharded, sequence replicated).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as mask_info_lib

from vgpt_jax.nn.tokens import NOISY, TokenAttrs, batched_attrs, pad_tokens, round_up

LANES = 128  # splash tiles: block_q and block_kv must be multiples of the TPU lane width
_MASK_VALUE = splash_kernel.DEFAULT_MASK_VALUE
# Splash's backward taking residuals as arguments: private, but the only way to run its dq/dkv
# kernels with the merged log-sum-exp (see the module docstring). Checked when first needed.
_SPLASH_BACKWARD = getattr(splash_kernel, "_splash_attention_bwd", None)
# A piece's log-sum-exp below this means "no visible key in this piece" (the kernel reports
# -inf when no tile of the row ran and mask_value + log(n) when a tile ran fully masked).
_EMPTY_LSE = 0.5 * _MASK_VALUE

# Sort code of a key: group << 28 | major << 2 | order, with major = frame (clean) or clip (noisy).
_GROUP_CLEAN, _GROUP_NOISY, _GROUP_PAD, _GROUP_FILL = 0, 1, 2, 3
_GROUP_UNIT = 1 << 28
_MAJOR_UNIT = 4  # order is in {0, 1, 2}; |frame|, |clip| must stay below 2**26 (prefix: < 0)
_NO_SEGMENT_KEY, _NO_SEGMENT_QUERY = -1, -2


class KeyRanges(NamedTuple):
    """Visibility of one example as per-query intervals over the sorted keys.

    perm (Tk,) int32: sorted position -> original key index. clean_end, clip_start, clip_end
    (Tq,) int32: query q sees sorted keys ``[0, clean_end)`` and ``[clip_start, clip_end)``.
    query_segment (Tq,), key_segment (Tk,) int32 (key_segment in sorted order): the segment ids
    that, with ``k < clip_end``, cut the clip piece down to ``[clip_start, clip_end)``.
    """

    perm: jax.Array
    clean_end: jax.Array
    clip_start: jax.Array
    clip_end: jax.Array
    query_segment: jax.Array
    key_segment: jax.Array


def key_ranges(q_attrs: TokenAttrs, k_attrs: TokenAttrs, num_keys: int | None = None) -> KeyRanges:
    """Sorts the keys and turns ``visible(q_attrs, k_attrs)`` into two intervals per query.

    q_attrs fields (Tq,), k_attrs fields (Tk,) (one example). Keys at index >= ``num_keys`` (default
    Tk) are fill: nobody sees them. Exact for attributes whose clip is non-decreasing in frame over
    the clean non-pad keys, with order in {0, 1, 2} and -2**26 <= frame, clip < 2**26. A condition
    prefix (``tokens.prefix_attrs``: negative frames, clip -1) sorts first, so a prefix query's
    prefix piece ends just after its own key and every frame query's prefix piece covers it.
    """
    tk = k_attrs.kind.shape[-1]
    num_keys = tk if num_keys is None else num_keys
    is_fill = jnp.arange(tk) >= num_keys
    k_noisy = k_attrs.kind == NOISY
    group = jnp.where(
        is_fill,
        _GROUP_FILL,
        jnp.where(k_attrs.is_pad, _GROUP_PAD, jnp.where(k_noisy, _GROUP_NOISY, _GROUP_CLEAN)),
    )
    major = jnp.where(group == _GROUP_CLEAN, k_attrs.frame, jnp.where(group == _GROUP_NOISY, k_attrs.clip, 0))
    minor = jnp.where(group <= _GROUP_NOISY, k_attrs.order, 0)
    code = (group * _GROUP_UNIT + major * _MAJOR_UNIT + minor).astype(jnp.int32)
    perm = jnp.argsort(code, stable=True).astype(jnp.int32)
    sorted_code = code[perm]
    sorted_group = group[perm]
    # Clips of the clean keys in sorted order, non-decreasing by the invariant; the rest sort last.
    clean_clips = jnp.where(sorted_group == _GROUP_CLEAN, k_attrs.clip[perm], jnp.iinfo(jnp.int32).max)

    q_noisy = (q_attrs.kind == NOISY) & ~q_attrs.is_pad
    q_clip, q_order = q_attrs.clip.astype(jnp.int32), q_attrs.order.astype(jnp.int32)
    # Clean query: clean keys with (frame, order) <= its own, i.e. code <= its clean code.
    clean_code = (_GROUP_CLEAN * _GROUP_UNIT + q_attrs.frame * _MAJOR_UNIT + q_order).astype(jnp.int32)
    clean_query_end = jnp.searchsorted(sorted_code, clean_code, side="right")
    # Noisy query: clean keys of strictly earlier clips.
    noisy_query_end = jnp.searchsorted(clean_clips, q_clip, side="left")
    clean_end = jnp.where(q_attrs.is_pad, num_keys, jnp.where(q_noisy, noisy_query_end, clean_query_end))

    clip_code = (_GROUP_NOISY * _GROUP_UNIT + q_clip * _MAJOR_UNIT).astype(jnp.int32)
    clip_start = jnp.where(q_noisy, jnp.searchsorted(sorted_code, clip_code, side="left"), 0)
    clip_end = jnp.where(q_noisy, jnp.searchsorted(sorted_code, clip_code + q_order, side="right"), 0)

    query_segment = jnp.where(q_noisy, q_clip, _NO_SEGMENT_QUERY)
    key_segment = jnp.where(sorted_group == _GROUP_NOISY, k_attrs.clip[perm], _NO_SEGMENT_KEY)
    as_i32 = lambda x: x.astype(jnp.int32)  # noqa: E731
    return KeyRanges(
        perm,
        as_i32(clean_end),
        as_i32(clip_start),
        as_i32(clip_end),
        as_i32(query_segment),
        as_i32(key_segment),
    )


def _key_below_bound(q_sequence: jax.Array, k_sequence: jax.Array) -> jax.Array:
    """In-kernel mask of both pieces: key index below the query's bound (carried in q_sequence)."""
    return k_sequence < q_sequence


def _smallest_int(max_value: int):
    """Scalar-prefetch tables live in the small TPU scalar memory: use the narrowest dtype."""
    for dtype in (jnp.int8, jnp.int16):
        if max_value <= jnp.iinfo(dtype).max:
            return dtype
    return jnp.int32


def tile_runs(lo: jax.Array, hi: jax.Array, block_q: int, block_kv: int, num_kv_blocks: int) -> jax.Array:
    """Which (query tile, key tile) pairs hold a visible pair, for per-query intervals [lo, hi).

    lo, hi (Tq,) int32 with Tq a multiple of block_q -> (Tq/block_q, num_kv_blocks) bool. Each query
    adds +1 at its first key tile and -1 after its last one; a running sum along the key tiles is
    then positive exactly on the tiles some query of the row reaches.
    """
    nonempty = (hi > lo).astype(jnp.int32)
    q_tile = jnp.arange(lo.shape[0]) // block_q
    first = jnp.where(hi > lo, lo // block_kv, 0)
    after_last = jnp.where(hi > lo, (hi - 1) // block_kv + 1, 0)
    delta = jnp.zeros((lo.shape[0] // block_q, num_kv_blocks + 1), jnp.int32)
    delta = delta.at[q_tile, first].add(nonempty).at[q_tile, after_last].add(-nonempty)
    return jnp.cumsum(delta, axis=1)[:, :num_kv_blocks] > 0


def _tile_to_fetch(runs: jax.Array, axis: int) -> jax.Array:
    """``data_next`` along ``axis`` of runs (nq, nkv) bool: the tile's own index where it runs.

    On a skipped step the kernel still names a tile to fetch; repeating the last tile that ran
    (the first one that will run, before any has) makes that a no-op for the DMA pipeline.
    """
    n = runs.shape[axis]
    index = jnp.expand_dims(jnp.arange(n, dtype=jnp.int32), 1 - axis)
    last = jax.lax.cummax(jnp.where(runs, index, -1), axis=axis)
    first = jnp.argmax(runs, axis=axis, keepdims=True).astype(jnp.int32)
    return jnp.where(last >= 0, last, first)


class _Piece(NamedTuple):
    """Inputs of one splash call besides q/k/v: mask infos (fwd/dq, dkv) and segment ids."""

    fwd: mask_info_lib.MaskInfo
    dkv: mask_info_lib.MaskInfo
    segment_ids: splash_kernel.SegmentIds | None


def _piece(bound, lo, hi, segment_ids, block_q: int, block_kv: int, num_kv_blocks: int) -> _Piece:
    """A splash piece masked by ``k < bound[q]`` (and segment ids), visiting tiles of [lo, hi)."""
    runs = tile_runs(lo, hi, block_q, block_kv, num_kv_blocks)
    num_q_blocks = runs.shape[0]
    block_mask = runs.astype(jnp.int8)[None]  # (1, nq, nkv): one table shared by every head

    def info(data_next):
        return mask_info_lib.MaskInfo(
            data_next=data_next[None],
            mask_next=None,
            block_mask=block_mask,
            partial_mask_blocks=None,
            q_sequence=bound,
            is_dynamic_mask=None,
        )

    fwd_next = _tile_to_fetch(runs, axis=1).astype(_smallest_int(num_kv_blocks))
    dkv_next = _tile_to_fetch(runs, axis=0).astype(_smallest_int(num_q_blocks))
    return _Piece(info(fwd_next), info(dkv_next), segment_ids)


def _block_sizes(block_q: int, block_kv: int) -> splash_kernel.BlockSizes:
    """One tile shape for forward, dq and dkv, so one visibility table serves all three."""
    return splash_kernel.BlockSizes(
        block_q=block_q,
        block_kv=block_kv,
        block_kv_compute=block_kv,
        block_q_dkv=block_q,
        block_kv_dkv=block_kv,
        block_kv_dkv_compute=block_kv,
        block_q_dq=block_q,
        block_kv_dq=block_kv,
    )


def _merge(outs, lses):
    """Log-sum-exp merge of piece outputs (H, Tq, D) and log-sum-exps (H, Tq).

    Returns the merged output (f32) and log-sum-exp; rows that see no key in any piece get a zero
    output and log-sum-exp 0, so their backward probabilities exp(mask_value - 0) vanish.
    """
    empties = [lse < _EMPTY_LSE for lse in lses]
    lses = [jnp.where(e, -jnp.inf, lse) for e, lse in zip(empties, lses, strict=True)]
    total = functools.reduce(jnp.logaddexp, lses)
    none_seen = functools.reduce(jnp.logical_and, empties)
    out = 0.0
    for empty, lse, o in zip(empties, lses, outs, strict=True):
        weight = jnp.where(empty, 0.0, jnp.exp(lse - total))
        out = out + jnp.where(empty[..., None], 0.0, weight[..., None] * o.astype(jnp.float32))
    return out, jnp.where(none_seen, 0.0, total)


def _pieces_forward(block_sizes, interpret, q, k, v, pieces):
    outs, lses = [], []
    for piece in pieces:
        kernel = splash_kernel.SplashAttentionKernel(
            piece.fwd,
            piece.fwd,
            piece.dkv,
            block_sizes=block_sizes,
            is_mqa=False,
            save_residuals=True,
            mask_value=_MASK_VALUE,
            attn_logits_soft_cap=None,
            residual_checkpoint_name=None,
            mask_function=_key_below_bound,
            interpret=interpret,
        )
        out, (lse,) = kernel(q, k, v, piece.segment_ids)
        outs.append(out)
        lses.append(lse)
    out, lse = _merge(outs, lses)
    return out.astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _pieces_attention(block_sizes, interpret, q, k, v, pieces):
    """Softmax attention over the union of the pieces' masks. q (H, Tq, D), k/v (H, Tk, D)."""
    return _pieces_forward(block_sizes, interpret, q, k, v, pieces)[0]


def _pieces_attention_fwd(block_sizes, interpret, q, k, v, pieces):
    out, lse = _pieces_forward(block_sizes, interpret, q, k, v, pieces)
    return out, (q, k, v, pieces, out, lse)


def _pieces_attention_bwd(block_sizes, interpret, residuals, d_out):
    q, k, v, pieces, out, lse = residuals
    if _SPLASH_BACKWARD is None:
        raise NotImplementedError(
            f"jax {jax.__version__} has no splash_attention_kernel._splash_attention_bwd; the "
            "'splash' backend's gradient was written against jax 0.10.2: use attention backend 'xla'"
        )
    grads = [jnp.zeros(x.shape, jnp.float32) for x in (q, k, v)]
    for piece in pieces:
        # Each piece's flash backward with the merged output and log-sum-exp: P = exp(S - lse) and
        # di = rowsum(dO * O) are those of the whole softmax, so the pieces' gradients add up.
        piece_grads = _SPLASH_BACKWARD(
            save_residuals=False,
            mask_value=_MASK_VALUE,
            is_mqa=False,
            block_sizes=block_sizes,
            residual_checkpoint_name=None,
            mask_function=_key_below_bound,
            attn_logits_soft_cap=None,
            interpret=interpret,
            res=(q, k, v, piece.segment_ids, None, out, lse, piece.fwd, piece.dkv),
            do=d_out,
        )
        grads = [g + d.astype(jnp.float32) for g, d in zip(grads, piece_grads[3:6], strict=True)]
    dq, dk, dv = (g.astype(x.dtype) for g, x in zip(grads, (q, k, v), strict=True))
    return dq, dk, dv, None


_pieces_attention.defvjp(_pieces_attention_fwd, _pieces_attention_bwd)


def _attend_example(q, k, v, q_attrs, k_attrs, *, num_keys: int, block_q: int, block_kv: int, interpret):
    """One example: q (Tq, H, D) pre-scaled, k/v (Tk, H, D), attrs (T,), all block-padded."""
    ranges = key_ranges(q_attrs, k_attrs, num_keys)
    num_kv_blocks = k.shape[0] // block_kv
    zeros = jnp.zeros_like(ranges.clean_end)
    prefix = _piece(ranges.clean_end, zeros, ranges.clean_end, None, block_q, block_kv, num_kv_blocks)
    segments = splash_kernel.SegmentIds(q=ranges.query_segment, kv=ranges.key_segment)
    clip = _piece(
        ranges.clip_end, ranges.clip_start, ranges.clip_end, segments, block_q, block_kv, num_kv_blocks
    )
    heads_first = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  (T, H, D) <-> (H, T, D)
    out = _pieces_attention(
        _block_sizes(block_q, block_kv),
        interpret,
        heads_first(q),
        heads_first(k[ranges.perm]),
        heads_first(v[ranges.perm]),
        (prefix, clip),
    )
    return heads_first(out)


def _padded_attrs(attrs: TokenAttrs, batch: int, padded: int) -> TokenAttrs:
    """Attributes broadcast to (B, T) and extended with pad tokens to (B, padded)."""
    return TokenAttrs(*(pad_tokens(a, padded, a.dtype == jnp.bool_) for a in batched_attrs(attrs, batch)))


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    *,
    block_q: int = 512,
    block_kv: int = 512,
    interpret: bool = False,
) -> jax.Array:
    """Softmax attention under ``visible(q_attrs, k_attrs)`` with TPU splash kernels.

    q (B, Tq, H, Dh), k/v (B, Tk, H, Dh); attrs fields (B, T) or broadcastable to it (e.g. (T,)).
    Returns (B, Tq, H, Dh) in q's dtype, softmax scale Dh**-0.5, as ``xla_attention``.
    ``block_q``/``block_kv``: tile sizes, multiples of 128 (shrunk to the padded length when the
    sequence is shorter). Sequences are padded to whole tiles with pad tokens and sliced back.
    ``interpret=True`` runs the Pallas kernels in the interpreter (CPU tests).
    """
    if block_q % LANES or block_kv % LANES or block_q <= 0 or block_kv <= 0:
        raise ValueError(
            f"splash attention tiles must be positive multiples of {LANES}: got block_q={block_q}, "
            f"block_kv={block_kv}; set the attention block sizes to e.g. 512"
        )
    batch, tq, _, head_dim = q.shape
    tk = k.shape[1]
    block_q = min(block_q, round_up(tq, LANES))
    block_kv = min(block_kv, round_up(tk, LANES))
    tq_pad, tk_pad = round_up(tq, block_q), round_up(tk, block_kv)

    # Splash does not scale the logits; fold Dh**-0.5 into q (the gradient flows through it),
    # in fp32 so a bf16 q is rounded once, not also the scale.
    q = pad_tokens((q.astype(jnp.float32) * head_dim**-0.5).astype(q.dtype), tq_pad, 0)
    k, v = pad_tokens(k, tk_pad, 0), pad_tokens(v, tk_pad, 0)
    # Padded queries are pad tokens (they see every original key, finite rows); padded keys are
    # marked fill inside ``key_ranges`` from their index, so not even pad queries see them.
    q_attrs = _padded_attrs(q_attrs, batch, tq_pad)
    k_attrs = _padded_attrs(k_attrs, batch, tk_pad)
    attend = functools.partial(
        _attend_example, num_keys=tk, block_q=block_q, block_kv=block_kv, interpret=interpret
    )
    out = jax.vmap(attend)(q, k, v, q_attrs, k_attrs)
    return out[:, :tq]
