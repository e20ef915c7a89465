"""Block-sparse flash attention for GPUs under Video-GPT's visibility rule (Pallas, Triton lowering).

About three quarters of the rule's (query, key) pairs are masked at training lengths (DESIGN.md §4),
so the kernels never touch a tile of the score matrix that the rule masks completely.

1. **Schedule** (plain XLA inside the caller's jit; the attributes are traced, the clip partition
   changes every step). The padded sequences are cut into blocks; every block gets a handful of
   attribute summaries (min/max of frame, clip and order per token category: O(L) work), and
   every (query block, key block) tile is classified from the two summaries alone
   (O(L² / (block_q·block_k)) scalar work: 3·10⁵ tiles of 64 x 64 at 35k tokens):

   - ``TILE_EMPTY``: no query of the tile sees any of its keys -> never loaded;
   - ``TILE_FULL``: every query sees every key -> computed without evaluating the rule;
   - ``TILE_PARTIAL``: anything else -> the rule is evaluated in-kernel from int32 attribute tiles.

   The classification is *sound* for any token order (a tile called empty or full really is) and
   *exact* when every block's clips form a contiguous range of clip ids, which the training,
   history and generation layouts guarantee (clips are contiguous runs of frames; a condition
   prefix is clip −1, just before clip 0: ``tokens.prefix_attrs``). Each row of
   tiles is then compacted into ``[n_partial, n_nonempty, ids of partial tiles…, ids of full
   tiles…]`` so a kernel runs one loop of ``n_partial`` masked steps and one of
   ``n_nonempty - n_partial`` unmasked steps, each a ``pl.ds(idx * block, block)`` slice.
   Heavy rows are launched first (largest-first scheduling against the long tail).

2. **Kernels**: a flash-attention forward with an online softmax in base 2 and fp32 statistics,
   saving the log-sum-exp; a ``jax.custom_vjp`` whose backward runs a dK/dV kernel (one key block
   per program, looping over the query blocks that see it: the transposed schedule) and a dQ
   kernel (one query block per program, looping over its key blocks). The backward recomputes
   probabilities from the saved log-sum-exp, so nothing of size L x L is ever stored.
   ``hopper_forward`` runs the forward in ``block_sparse_hopper`` instead (Mosaic GPU, warpgroup
   MMA and TMA, the same schedule at 128-row query blocks, the rule as :func:`range_codes`).

The head dim is computed in at most two power-of-two column blocks (Triton's tensor shapes), each
its own array: 96 = 64 + 32, so the 3.76 B model's heads take no padded columns (a dot product is
the sum of its column blocks'; :func:`head_dim_blocks`).

Internal padding (to block multiples) uses *void* tokens:
void keys are seen by nobody, void queries see nothing. They are distinct from the rule's pad
tokens, which the kernels reproduce exactly (pad queries see every real key, pad keys are seen by
pad queries only). A query row that sees no key at all returns zeros (the dense reference would
return the mean of all values); under the rule every real token sees itself, so this does not
arise in the model.

Its speed against cuDNN and the tile sweep behind the default tiles are in the README
("Attention kernels"); ``vgpt_jax.tools.block_sparse_check`` measures them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from vgpt_jax.nn import block_sparse_hopper
from vgpt_jax.nn.remat import ATTENTION_LSE, ATTENTION_OUT
from vgpt_jax.nn.tokens import NOISY, TokenAttrs, batched_attrs, pad_tokens, round_up

TILE_EMPTY, TILE_PARTIAL, TILE_FULL = 0, 1, 2

# Token flags as passed to the kernels (one int32 per token).
_FLAG_NOISY, _FLAG_PAD, _FLAG_VOID = 1, 2, 4
_INT_MAX = int(np.iinfo(np.int32).max)
_INT_MIN = int(np.iinfo(np.int32).min)
_LOG2_E = math.log2(math.e)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile and launch parameters of one kernel.

    ``block_q`` x ``block_k`` is the score tile one loop step computes; both powers of two >= 16
    (Triton's tensor shapes). ``num_warps`` / ``num_stages`` go to Triton (stages = software
    pipelining depth of the key/query loop).
    """

    block_q: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


class _Tokens(NamedTuple):
    """Kernel-side attributes, each (B, T_padded) int32."""

    flags: jax.Array  # _FLAG_* bits
    frame: jax.Array
    clip: jax.Array
    order: jax.Array


class _Schedule(NamedTuple):
    """Compacted tile lists of one kernel, rows over the kernel's outer (program) blocks.

    rows: (B, n_outer, 2 + n_inner) int32, ``[n_partial, n_nonempty, partial ids…, full ids…, …]``.
    launch_order: (B, n_outer) int32, outer blocks by decreasing number of non-empty tiles.
    """

    rows: jax.Array
    launch_order: jax.Array


class _Config(NamedTuple):
    fwd: KernelConfig
    dkv: KernelConfig
    dq: KernelConfig
    scale: float
    interpret: bool
    hopper_forward: bool  # the forward in block_sparse_hopper (Mosaic GPU) instead of Triton
    hopper_dq: bool  # dQ in block_sparse_hopper
    hopper_dkv: bool  # dK/dV in block_sparse_hopper


# ----------------------------------------------------------------------------------------------
# Token preparation
# ----------------------------------------------------------------------------------------------


def _prepare_tokens(attrs: TokenAttrs, batch: int, length: int, *, pad_is_void: bool) -> _Tokens:
    """TokenAttrs with fields (T,) or (B, T) -> _Tokens (B, length), extra tokens void.

    ``pad_is_void``: pad tokens become void (used for queries whose outputs are not needed).
    """
    kind, frame, clip, order, is_pad = batched_attrs(attrs, batch)

    def pad(x):
        return pad_tokens(x, length)

    void = jnp.arange(length) >= kind.shape[-1]
    void = jnp.broadcast_to(void, (batch, length))
    is_pad = pad(is_pad.astype(bool))
    if pad_is_void:
        void, is_pad = void | is_pad, jnp.zeros_like(is_pad)
    noisy = pad(kind) == NOISY
    flags = (
        noisy.astype(jnp.int32) * _FLAG_NOISY
        + (is_pad & ~void).astype(jnp.int32) * _FLAG_PAD
        + void.astype(jnp.int32) * _FLAG_VOID
    )
    as_i32 = lambda x: pad(x.astype(jnp.int32))  # noqa: E731
    return _Tokens(flags, as_i32(frame), as_i32(clip), as_i32(order))


def range_codes(qt: _Tokens, kt: _Tokens) -> tuple[jax.Array, jax.Array]:
    """The rule as ranges, for the Hopper kernel: query bounds (B, 4, Tq) and key codes (B, 3, Tk).

    Query i sees key j iff ``kf_j <= tf_i or kc_j <= tc_i or lo_i <= kn_j <= hi_i``
    (``block_sparse_hopper.range_visible``), the rule of :func:`_rule` with void tokens:

    - clean key: kf = 4·frame + order (clean queries: earlier frame, or same frame and order <=),
      kc = clip (noisy queries: earlier clip); noisy key: kn = 4·clip + order (noisy queries of
      the same clip with order >=; orders are < 4). The codes a key does not use are INT_MAX.
    - clean query: tf = 4·frame + order; noisy query: tc = clip − 1, [lo, hi] = [4·clip,
      4·clip + order]; the bounds a query does not use select nothing.
    - pad key: kf = INT_MAX − 1, which only a pad query's tf = INT_MAX − 1 reaches; a pad query's
      noisy range is [INT_MIN, INT_MAX − 1]: every key but void ones (all codes INT_MAX).
    """
    big, small = _INT_MAX, _INT_MIN

    def kinds(t: _Tokens):  # -> pad, noisy, clean masks (void tokens are none of them)
        void = (t.flags & _FLAG_VOID) != 0
        pad = ((t.flags & _FLAG_PAD) != 0) & ~void
        live = ~void & ~pad
        noisy = live & ((t.flags & _FLAG_NOISY) != 0)
        return pad, noisy, live & ~noisy

    pad, noisy, clean = kinds(kt)
    kf = jnp.where(clean, 4 * kt.frame + kt.order, jnp.where(pad, big - 1, big))
    kc = jnp.where(clean, kt.clip, big)
    kn = jnp.where(noisy, 4 * kt.clip + kt.order, big)

    pad, noisy, clean = kinds(qt)
    tf = jnp.where(clean, 4 * qt.frame + qt.order, jnp.where(pad, big - 1, small))
    tc = jnp.where(noisy, qt.clip - 1, small)
    lo = jnp.where(noisy, 4 * qt.clip, jnp.where(pad, small, big))
    hi = jnp.where(noisy, 4 * qt.clip + qt.order, jnp.where(pad, big - 1, small))
    return jnp.stack([tf, tc, lo, hi], axis=1), jnp.stack([kf, kc, kn], axis=1)


# ----------------------------------------------------------------------------------------------
# Schedule: per-block summaries -> tile classes -> compacted lists
# ----------------------------------------------------------------------------------------------


class _BlockSummary(NamedTuple):
    """Attribute summaries of each block, every field (B, n_blocks).

    "live" tokens are neither pad nor void; "clean"/"noisy" below mean live clean/noisy tokens.
    Values over an empty category are sentinels and are always gated by the ``any_*`` flags.
    """

    any_void: jax.Array
    any_pad: jax.Array  # pad and not void
    any_nonvoid: jax.Array
    any_clean: jax.Array
    any_noisy: jax.Array
    clean_lo_frame: jax.Array  # lexicographic min of (frame, order) over clean tokens
    clean_lo_order: jax.Array
    clean_hi_frame: jax.Array  # lexicographic max
    clean_hi_order: jax.Array
    clean_clip_lo: jax.Array
    clean_clip_hi: jax.Array
    noisy_clip_lo: jax.Array
    noisy_clip_hi: jax.Array
    noisy_order_lo: jax.Array
    noisy_order_hi: jax.Array
    noisy_order_lo_at_clip_lo: jax.Array  # min / max order over noisy tokens of clip noisy_clip_lo
    noisy_order_hi_at_clip_lo: jax.Array
    noisy_order_lo_at_clip_hi: jax.Array  # … of clip noisy_clip_hi
    noisy_order_hi_at_clip_hi: jax.Array


def _summarise(tokens: _Tokens, block: int) -> _BlockSummary:
    """_Tokens (B, n·block) -> _BlockSummary (B, n): O(L) reductions."""

    def blocks(x):
        return x.reshape(x.shape[0], -1, block)

    flags, frame, clip, order = (blocks(x) for x in tokens)
    void = (flags & _FLAG_VOID) != 0
    pad = (flags & _FLAG_PAD) != 0
    live = ~void & ~pad
    noisy = live & ((flags & _FLAG_NOISY) != 0)
    clean = live & ((flags & _FLAG_NOISY) == 0)

    def lo(x, m):
        return jnp.min(jnp.where(m, x, _INT_MAX), axis=-1)

    def hi(x, m):
        return jnp.max(jnp.where(m, x, _INT_MIN), axis=-1)

    clean_lo_frame, clean_hi_frame = lo(frame, clean), hi(frame, clean)
    noisy_clip_lo, noisy_clip_hi = lo(clip, noisy), hi(clip, noisy)
    at_clip_lo = noisy & (clip == noisy_clip_lo[..., None])
    at_clip_hi = noisy & (clip == noisy_clip_hi[..., None])
    return _BlockSummary(
        any_void=jnp.any(void, axis=-1),
        any_pad=jnp.any(pad, axis=-1),
        any_nonvoid=jnp.any(~void, axis=-1),
        any_clean=jnp.any(clean, axis=-1),
        any_noisy=jnp.any(noisy, axis=-1),
        clean_lo_frame=clean_lo_frame,
        clean_lo_order=lo(order, clean & (frame == clean_lo_frame[..., None])),
        clean_hi_frame=clean_hi_frame,
        clean_hi_order=hi(order, clean & (frame == clean_hi_frame[..., None])),
        clean_clip_lo=lo(clip, clean),
        clean_clip_hi=hi(clip, clean),
        noisy_clip_lo=noisy_clip_lo,
        noisy_clip_hi=noisy_clip_hi,
        noisy_order_lo=lo(order, noisy),
        noisy_order_hi=hi(order, noisy),
        noisy_order_lo_at_clip_lo=lo(order, at_clip_lo),
        noisy_order_hi_at_clip_lo=hi(order, at_clip_lo),
        noisy_order_lo_at_clip_hi=lo(order, at_clip_hi),
        noisy_order_hi_at_clip_hi=hi(order, at_clip_hi),
    )


def _lex_le(f1, o1, f2, o2):
    """(f1, o1) <= (f2, o2) lexicographically (the clean->clean rule)."""
    return (f1 < f2) | ((f1 == f2) & (o1 <= o2))


def _classify(qs: _BlockSummary, ks: _BlockSummary) -> jax.Array:
    """Tile classes (B, n_q, n_k) int32 from query and key block summaries.

    Each category pair of the rule reduces to one comparison of extremes (exists a visible pair
    <=> the most permissive query and key satisfy it; all pairs visible <=> the least permissive
    do), except noisy->noisy ("same clip and key order <= query order"), which is checked on the
    shared clip range's end clips with their own order extremes and on interior clips with the
    block-wide extremes: exact when clips are contiguous inside a block, conservative otherwise.
    """
    q = _BlockSummary(*(x[:, :, None] for x in qs))
    k = _BlockSummary(*(x[:, None, :] for x in ks))

    cc_any = q.any_clean & k.any_clean
    cc_any &= _lex_le(k.clean_lo_frame, k.clean_lo_order, q.clean_hi_frame, q.clean_hi_order)
    nc_any = q.any_noisy & k.any_clean & (k.clean_clip_lo < q.noisy_clip_hi)

    shared_lo = jnp.maximum(q.noisy_clip_lo, k.noisy_clip_lo)
    shared_hi = jnp.minimum(q.noisy_clip_hi, k.noisy_clip_hi)

    def q_order_hi(c):  # upper bound of the max query order within clip c
        at_hi = jnp.where(c == q.noisy_clip_hi, q.noisy_order_hi_at_clip_hi, q.noisy_order_hi)
        return jnp.where(c == q.noisy_clip_lo, q.noisy_order_hi_at_clip_lo, at_hi)

    def k_order_lo(c):  # lower bound of the min key order within clip c
        at_hi = jnp.where(c == k.noisy_clip_hi, k.noisy_order_lo_at_clip_hi, k.noisy_order_lo)
        return jnp.where(c == k.noisy_clip_lo, k.noisy_order_lo_at_clip_lo, at_hi)

    interior = (shared_hi > shared_lo + 1) & (k.noisy_order_lo <= q.noisy_order_hi)
    nn_any = q.any_noisy & k.any_noisy & (shared_lo <= shared_hi)
    nn_any &= (
        (k_order_lo(shared_lo) <= q_order_hi(shared_lo))
        | (k_order_lo(shared_hi) <= q_order_hi(shared_hi))
        | interior
    )
    pad_any = q.any_pad & k.any_nonvoid  # pad queries see every non-void key
    nonempty = pad_any | cc_any | nc_any | nn_any

    q_live = q.any_clean | q.any_noisy
    cc_all = ~(q.any_clean & k.any_clean) | _lex_le(
        k.clean_hi_frame, k.clean_hi_order, q.clean_lo_frame, q.clean_lo_order
    )
    nc_all = ~(q.any_noisy & k.any_clean) | (k.clean_clip_hi < q.noisy_clip_lo)
    one_clip = (
        (q.noisy_clip_lo == q.noisy_clip_hi)
        & (k.noisy_clip_lo == k.noisy_clip_hi)
        & (q.noisy_clip_lo == k.noisy_clip_lo)
    )
    nn_all = ~(q.any_noisy & k.any_noisy) | (one_clip & (k.noisy_order_hi <= q.noisy_order_lo))
    live_all = ~k.any_pad & ~(q.any_clean & k.any_noisy) & cc_all & nc_all & nn_all
    full = nonempty & ~k.any_void & (~q_live | live_all)
    return jnp.where(nonempty, jnp.where(full, TILE_FULL, TILE_PARTIAL), TILE_EMPTY).astype(jnp.int32)


def _compact(classes: jax.Array) -> _Schedule:
    """Tile classes (B, n_outer, n_inner) -> _Schedule with rows over the outer axis.

    A stable sort of each row by class rank (partial, full, empty): partial tiles first, then
    full ones, each in key order; entries past ``n_nonempty`` are never read. (The sort was faster
    than a prefix-sum + scatter partition where measured: README, "Attention kernels".)
    """
    rank = jnp.where(classes == TILE_PARTIAL, 0, jnp.where(classes == TILE_FULL, 1, 2))
    ids = jnp.argsort(rank, axis=-1, stable=True).astype(jnp.int32)
    n_partial = jnp.sum(classes == TILE_PARTIAL, axis=-1, dtype=jnp.int32)
    n_nonempty = jnp.sum(classes != TILE_EMPTY, axis=-1, dtype=jnp.int32)
    rows = jnp.concatenate([n_partial[..., None], n_nonempty[..., None], ids], axis=-1)
    launch_order = jnp.argsort(-n_nonempty, axis=-1, stable=True).astype(jnp.int32)
    return _Schedule(rows, launch_order)


def _tile_classes_padded(qt: _Tokens, kt: _Tokens, block_q: int, block_k: int) -> jax.Array:
    return _classify(_summarise(qt, block_q), _summarise(kt, block_k))


def tile_classes(
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    block_q: int,
    block_k: int,
    *,
    skip_pad_queries: bool = False,
) -> jax.Array:
    """The kernels' tile classes: (B, ceil(Tq/block_q), ceil(Tk/block_k)) int32 of TILE_*.

    Attribute fields (B, T) (or (T,), taken as B = 1). Tokens past Tq / Tk in the last blocks are
    void (see the module docstring); with ``skip_pad_queries`` pad queries are void too.
    """
    b = max([jnp.shape(a.kind)[0] for a in (q_attrs, k_attrs) if jnp.ndim(a.kind) > 1], default=1)
    tq, tk = jnp.shape(q_attrs.kind)[-1], jnp.shape(k_attrs.kind)[-1]
    qt = _prepare_tokens(q_attrs, b, round_up(tq, block_q), pad_is_void=skip_pad_queries)
    kt = _prepare_tokens(k_attrs, b, round_up(tk, block_k), pad_is_void=False)
    return _tile_classes_padded(qt, kt, block_q, block_k)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


class _Side(NamedTuple):
    """One side's attributes of a tile, already shaped to broadcast (rows or columns)."""

    noisy: jax.Array
    sees_all: jax.Array  # queries: pad (not void). keys: not void (what a pad query sees)
    live: jax.Array  # neither pad nor void
    frame: jax.Array
    clip: jax.Array
    order: jax.Array


def _load_side(refs, rows, expand, *, keys: bool) -> _Side:
    """Loads one block of attributes (flags, frame, clip, order refs at ``rows``)."""
    flags, frame, clip, order = (expand(r[rows]) for r in refs)
    void = (flags & _FLAG_VOID) != 0
    pad = (flags & _FLAG_PAD) != 0
    noisy = (flags & _FLAG_NOISY) != 0
    sees_all = ~void if keys else pad & ~void
    return _Side(noisy, sees_all, ~pad & ~void, frame, clip, order)


def _rule(q: _Side, k: _Side) -> jax.Array:
    """The spec §5.1 rule on a tile (same as tokens.visible, plus void tokens)."""
    order_ok = k.order <= q.order
    clean_clean = (k.frame < q.frame) | ((k.frame == q.frame) & order_ok)
    live = jnp.where(
        k.noisy,
        q.noisy & (k.clip == q.clip) & order_ok,
        jnp.where(q.noisy, k.clip < q.clip, clean_clean),
    )
    return (q.sees_all & k.sees_all) | (q.live & k.live & live)


def _dot(a: jax.Array, b: jax.Array, *, trans_b: bool = False) -> jax.Array:
    """a (m, k) · b (k, n) (or bᵀ with b (n, k)) -> (m, n) fp32: Triton's tl.dot, fp32 accumulate."""
    dims = (((1,), (1 if trans_b else 0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _dot_t(a_blocks: tuple[jax.Array, ...], b_blocks: tuple[jax.Array, ...]) -> jax.Array:
    """Σ_i a_i · b_iᵀ over the head dim's column blocks: a (m, Dh) · b (n, Dh)ᵀ -> (m, n) fp32."""
    return functools.reduce(
        jnp.add, (_dot(a, b, trans_b=True) for a, b in zip(a_blocks, b_blocks, strict=True))
    )


def _load(refs, rows) -> tuple[jax.Array, ...]:
    """The rows of every column block of one (T, Dh) operand."""
    return tuple(r[rows, :] for r in refs)


def _groups(refs, sizes: tuple[int, ...]) -> list[tuple]:
    """``refs`` cut into consecutive groups of ``sizes`` (a kernel's operands, in call order)."""
    starts = np.cumsum((0, *sizes))
    assert starts[-1] == len(refs), (len(refs), sizes)
    return [tuple(refs[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _block(index: jax.Array, size: int):
    """The rows of block ``index`` of a sequence cut into blocks of ``size``."""
    return pl.ds(pl.multiple_of(index * size, size), size)


def _sweep(sched_ref, row: jax.Array, step, carry):
    """Runs ``step(t, carry, masked)`` over the schedule row's partial tiles, then its full ones.

    Two loops instead of a branch per step: each loop body is straight-line code that Triton can
    software-pipeline.
    """
    n_partial, n_nonempty = sched_ref[row, 0], sched_ref[row, 1]
    carry = jax.lax.fori_loop(0, n_partial, functools.partial(step, masked=True), carry)
    return jax.lax.fori_loop(n_partial, n_nonempty, functools.partial(step, masked=False), carry)


def _rows_expand(x):
    return x[:, None]


def _cols_expand(x):
    return x[None, :]


def _forward_kernel(launch_ref, sched_ref, *refs, blocks: int, block_q: int, block_k: int, scale: float):
    """One (query block, batch, head): o (block_q, Dh) and lse (block_q,) in base 2.

    Refs: q…, k…, v…, o… (T, w) per column block of the head dim, the query and the key
    attributes (4 x (T,) each), lse (T,); sched (n_q, 2 + n_k), launch (n_q,).
    """
    q_refs, k_refs, v_refs, q_attrs, k_attrs, o_refs, (lse_ref,) = _groups(
        refs, (blocks, blocks, blocks, 4, 4, blocks, 1)
    )
    qb = launch_ref[pl.program_id(0)]
    q_rows = _block(qb, block_q)
    q = _load(q_refs, q_rows)
    q_side = _load_side(q_attrs, q_rows, _rows_expand, keys=False)
    scale_log2 = scale * _LOG2_E  # exp(x) = exp2(x·log2 e): exp2 is the native instruction

    def step(t, carry, masked):
        acc, m, row_sum = carry
        kb = sched_ref[qb, 2 + t]
        k_rows = _block(kb, block_k)
        s = _dot_t(q, _load(k_refs, k_rows))  # (block_q, block_k) fp32, unscaled
        if masked:
            k_side = _load_side(k_attrs, k_rows, _cols_expand, keys=True)
            s = jnp.where(_rule(q_side, k_side), s, -jnp.inf)
        # Running max in scaled base-2 units; the scale is applied inside exp2's argument
        # (s·c − m: one fused multiply-add per score).
        m_new = jnp.maximum(m, jnp.max(s, axis=1) * scale_log2)
        # A row with nothing visible so far keeps m = -inf; shift by 0 there to avoid inf - inf.
        shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        alpha = jnp.exp2(m - shift)
        p = jnp.exp2(s * scale_log2 - shift[:, None])
        row_sum = alpha * row_sum + jnp.sum(p, axis=1)
        v = _load(v_refs, k_rows)
        p = p.astype(v[0].dtype)
        acc = tuple(alpha[:, None] * a + _dot(p, v_i) for a, v_i in zip(acc, v, strict=True))
        return acc, m_new, row_sum

    carry = (
        tuple(jnp.zeros((block_q, q_i.shape[-1]), jnp.float32) for q_i in q),
        jnp.full((block_q,), -jnp.inf, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    acc, m, row_sum = _sweep(sched_ref, qb, step, carry)
    empty_row = row_sum == 0.0
    denominator = jnp.where(empty_row, 1.0, row_sum)[:, None]
    for o_ref, a in zip(o_refs, acc, strict=True):
        o_ref[q_rows, :] = (a / denominator).astype(o_ref.dtype)
    # +inf for rows that see nothing: the backward's exp2(s - lse) is then 0 for them.
    lse_ref[q_rows] = jnp.where(empty_row, jnp.inf, m + jnp.log2(jnp.where(empty_row, 1.0, row_sum)))


def _dkv_kernel(launch_ref, sched_ref, *refs, blocks: int, block_q: int, block_k: int, scale: float):
    """One (key block, batch, head): dk, dv (block_k, Dh), over the query blocks that see it.

    Refs: q…, k…, v…, do… per column block, lse, delta (T,), the attributes, dk…, dv….
    Works in the transposed orientation (keys on rows) so no (block_q, block_k) tile is
    transposed: sT = k·qᵀ, pT = exp2(sT − lse), dv += pT·do, dsT = pT ∘ (v·doᵀ − delta),
    dk += dsT·q.
    """
    q_refs, k_refs, v_refs, do_refs, (lse_ref, delta_ref), q_attrs, k_attrs, dk_refs, dv_refs = _groups(
        refs, (blocks, blocks, blocks, blocks, 2, 4, 4, blocks, blocks)
    )
    kb = launch_ref[pl.program_id(0)]
    k_rows = _block(kb, block_k)
    k = _load(k_refs, k_rows)
    v = _load(v_refs, k_rows)
    k_side = _load_side(k_attrs, k_rows, _rows_expand, keys=True)
    scale_log2 = scale * _LOG2_E

    def step(t, carry, masked):
        dk, dv = carry
        qb = sched_ref[kb, 2 + t]
        q_rows = _block(qb, block_q)
        q = _load(q_refs, q_rows)
        do = _load(do_refs, q_rows)
        lse = lse_ref[q_rows]
        delta = delta_ref[q_rows]
        s_t = _dot_t(k, q) * scale_log2  # (block_k, block_q)
        p_t = jnp.exp2(s_t - lse[None, :])
        if masked:
            q_side = _load_side(q_attrs, q_rows, _cols_expand, keys=False)
            p_t = jnp.where(_rule(q_side, k_side), p_t, 0.0)
        p_low = p_t.astype(do[0].dtype)
        dv = tuple(a + _dot(p_low, do_i) for a, do_i in zip(dv, do, strict=True))
        ds_t = (p_t * (_dot_t(v, do) - delta[None, :])).astype(q[0].dtype)
        dk = tuple(a + _dot(ds_t, q_i) for a, q_i in zip(dk, q, strict=True))
        return dk, dv

    zeros = tuple(jnp.zeros((block_k, k_i.shape[-1]), jnp.float32) for k_i in k)
    dk, dv = _sweep(sched_ref, kb, step, (zeros, zeros))
    for dk_ref, dv_ref, dk_i, dv_i in zip(dk_refs, dv_refs, dk, dv, strict=True):
        dk_ref[k_rows, :] = (dk_i * scale).astype(dk_ref.dtype)
        dv_ref[k_rows, :] = dv_i.astype(dv_ref.dtype)


def _dq_kernel(launch_ref, sched_ref, *refs, blocks: int, block_q: int, block_k: int, scale: float):
    """One (query block, batch, head): dq (block_q, Dh) = scale · Σ_k (p ∘ (do·vᵀ − delta))·k.

    Refs as :func:`_dkv_kernel`'s, with dq… as the outputs.
    """
    q_refs, k_refs, v_refs, do_refs, (lse_ref, delta_ref), q_attrs, k_attrs, dq_refs = _groups(
        refs, (blocks, blocks, blocks, blocks, 2, 4, 4, blocks)
    )
    qb = launch_ref[pl.program_id(0)]
    q_rows = _block(qb, block_q)
    q = _load(q_refs, q_rows)
    do = _load(do_refs, q_rows)
    lse = lse_ref[q_rows]
    delta = delta_ref[q_rows]
    q_side = _load_side(q_attrs, q_rows, _rows_expand, keys=False)
    scale_log2 = scale * _LOG2_E

    def step(t, dq, masked):
        kb = sched_ref[qb, 2 + t]
        k_rows = _block(kb, block_k)
        k = _load(k_refs, k_rows)
        p = jnp.exp2(_dot_t(q, k) * scale_log2 - lse[:, None])
        if masked:
            k_side = _load_side(k_attrs, k_rows, _cols_expand, keys=True)
            p = jnp.where(_rule(q_side, k_side), p, 0.0)
        ds = (p * (_dot_t(do, _load(v_refs, k_rows)) - delta[:, None])).astype(k[0].dtype)
        return tuple(a + _dot(ds, k_i) for a, k_i in zip(dq, k, strict=True))

    dq = _sweep(sched_ref, qb, step, tuple(jnp.zeros(q_i.shape, jnp.float32) for q_i in q))
    for dq_ref, dq_i in zip(dq_refs, dq, strict=True):
        dq_ref[q_rows, :] = (dq_i * scale).astype(dq_ref.dtype)


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers. Every program sees whole sequences of its (batch, head) and slices its
# own blocks: the schedule decides which blocks, so block indices cannot come from the grid.
# An operand's head dim is passed as column blocks (:func:`_column_blocks`), one array each.
# ----------------------------------------------------------------------------------------------


def head_dim_blocks(head_dim: int) -> tuple[int, ...]:
    """Widths of the column blocks the kernels compute a head dim in, largest first.

    Powers of two >= 16 (Triton's tensor shapes) that tile the head dim rounded up to 16 in at
    most two blocks (96 -> (64, 32), 128 -> (128,)); otherwise one block of the next power of two
    (112 -> (128,)), the extra columns zero-padded. Largest first, each block starts at a
    multiple of its own width, which a BlockSpec's block index needs.
    """
    width = round_up(head_dim, 16)
    top = 1 << (width.bit_length() - 1)
    rest = width - top
    if rest == 0:
        return (top,)
    if rest & (rest - 1) == 0:
        return (top, rest)
    return (pl.next_power_of_2(width),)


def _seq_specs(length: int, head_dim: int) -> list[pl.BlockSpec]:  # (B, T, H, w) -> (T, w) per block
    return [
        pl.BlockSpec((None, length, None, width), lambda i, b, h: (b, 0, h, 0))
        for width in head_dim_blocks(head_dim)
    ]


def _column_blocks(x: jax.Array) -> list[jax.Array]:
    """(B, T, H, Dh) -> one (B, T, H, w) array per column block of the head dim.

    Separate arrays, not BlockSpecs at column offsets of one array: the Triton lowering took
    a block narrower than the array's last dim for a contiguous one (wrong values on an H200).
    """
    starts = np.cumsum((0, *head_dim_blocks(x.shape[-1])))
    if len(starts) == 2:
        return [x]
    return [x[..., a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _block_outputs(shape: tuple[int, ...], dtype) -> list[jax.ShapeDtypeStruct]:
    """One (B, T, H, w) output per column block; :func:`_join` puts them back side by side."""
    return [jax.ShapeDtypeStruct((*shape[:-1], w), dtype) for w in head_dim_blocks(shape[-1])]


def _join(blocks) -> jax.Array:
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)


def _tok_spec(length: int) -> pl.BlockSpec:  # (B, T) -> (T,)
    return pl.BlockSpec((None, length), lambda i, b, h: (b, 0))


def _stat_spec(length: int) -> pl.BlockSpec:  # (B, H, T) -> (T,)
    return pl.BlockSpec((None, None, length), lambda i, b, h: (b, h, 0))


def _schedule_specs(sched: _Schedule) -> list[pl.BlockSpec]:
    n_outer, width = sched.rows.shape[1:]
    return [
        pl.BlockSpec((None, n_outer), lambda i, b, h: (b, 0)),
        pl.BlockSpec((None, n_outer, width), lambda i, b, h: (b, 0, 0)),
    ]


def _compiler_params(kc: KernelConfig):
    params = getattr(plgpu, "CompilerParams", None) or plgpu.TritonCompilerParams  # older JAX
    return params(num_warps=kc.num_warps, num_stages=kc.num_stages)


def _with_static_args(kernel, head_dim: int, kc: KernelConfig, scale: float):
    """``kernel`` with its column-block count, tiles and softmax scale bound."""
    n = len(head_dim_blocks(head_dim))
    return functools.partial(kernel, blocks=n, block_q=kc.block_q, block_k=kc.block_k, scale=scale)


def _forward_call(q, k, v, qt: _Tokens, kt: _Tokens, sched: _Schedule, kc: KernelConfig, scale, interpret):
    """q (B, Tq, H, Dh), k/v (B, Tk, H, Dh) padded -> o (B, Tq, H, Dh), lse (B, H, Tq) fp32."""
    b, tq, h, d = q.shape
    tk = k.shape[1]
    *out, lse = pl.pallas_call(
        _with_static_args(_forward_kernel, d, kc, scale),
        grid=(tq // kc.block_q, b, h),
        in_specs=[
            *_schedule_specs(sched),
            *_seq_specs(tq, d),
            *_seq_specs(tk, d),
            *_seq_specs(tk, d),
            *[_tok_spec(tq)] * 4,
            *[_tok_spec(tk)] * 4,
        ],
        out_specs=[*_seq_specs(tq, d), _stat_spec(tq)],
        out_shape=[*_block_outputs(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, tq), jnp.float32)],
        compiler_params=_compiler_params(kc),
        interpret=interpret,
        name="block_sparse_attention_fwd",
    )(sched.launch_order, sched.rows, *_column_blocks(q), *_column_blocks(k), *_column_blocks(v), *qt, *kt)
    return _join(out), lse


def _backward_in_specs(sched: _Schedule, tq: int, tk: int, d: int) -> list[pl.BlockSpec]:
    """Schedule, q, k, v, do, lse, delta and the attributes, for both backward kernels."""
    return [
        *_schedule_specs(sched),
        *_seq_specs(tq, d),
        *_seq_specs(tk, d),
        *_seq_specs(tk, d),
        *_seq_specs(tq, d),
        _stat_spec(tq),
        _stat_spec(tq),
        *[_tok_spec(tq)] * 4,
        *[_tok_spec(tk)] * 4,
    ]


def _backward_operands(q, k, v, do, lse, delta, qt, kt) -> list:
    blocks = [block for x in (q, k, v, do) for block in _column_blocks(x)]
    return [*blocks, lse, delta, *qt, *kt]


def _dkv_call(q, k, v, do, lse, delta, qt, kt, sched: _Schedule, kc: KernelConfig, scale, interpret):
    """-> dk, dv (B, Tk, H, Dh) in k's dtype; ``sched`` rows over key blocks."""
    b, tq, h, d = q.shape
    tk = k.shape[1]
    n = len(head_dim_blocks(d))
    out = pl.pallas_call(
        _with_static_args(_dkv_kernel, d, kc, scale),
        grid=(tk // kc.block_k, b, h),
        in_specs=_backward_in_specs(sched, tq, tk, d),
        out_specs=[*_seq_specs(tk, d), *_seq_specs(tk, d)],
        out_shape=[*_block_outputs(k.shape, k.dtype), *_block_outputs(v.shape, v.dtype)],
        compiler_params=_compiler_params(kc),
        interpret=interpret,
        name="block_sparse_attention_dkv",
    )(sched.launch_order, sched.rows, *_backward_operands(q, k, v, do, lse, delta, qt, kt))
    return _join(out[:n]), _join(out[n:])


def _dq_call(q, k, v, do, lse, delta, qt, kt, sched: _Schedule, kc: KernelConfig, scale, interpret):
    """-> dq (B, Tq, H, Dh) in q's dtype; ``sched`` rows over query blocks."""
    b, tq, h, d = q.shape
    tk = k.shape[1]
    out = pl.pallas_call(
        _with_static_args(_dq_kernel, d, kc, scale),
        grid=(tq // kc.block_q, b, h),
        in_specs=_backward_in_specs(sched, tq, tk, d),
        out_specs=_seq_specs(tq, d),
        out_shape=_block_outputs(q.shape, q.dtype),
        compiler_params=_compiler_params(kc),
        interpret=interpret,
        name="block_sparse_attention_dq",
    )(sched.launch_order, sched.rows, *_backward_operands(q, k, v, do, lse, delta, qt, kt))
    return _join(out)


# ----------------------------------------------------------------------------------------------
# custom_vjp and the public function
# ----------------------------------------------------------------------------------------------


class _Schedules(NamedTuple):
    fwd: _Schedule  # rows over query blocks (fwd tiles)
    dkv: _Schedule  # rows over key blocks (dkv tiles, transposed)
    dq: _Schedule  # rows over query blocks (dq tiles)


def _schedules(
    qt: _Tokens, kt: _Tokens, fwd: KernelConfig, dkv: KernelConfig, dq: KernelConfig
) -> _Schedules:
    """The three kernels' schedules; one classification per distinct tiling."""
    classes = {}
    for kc in (fwd, dkv, dq):
        tiles = (kc.block_q, kc.block_k)
        if tiles not in classes:
            classes[tiles] = _tile_classes_padded(qt, kt, *tiles)
    return _Schedules(
        fwd=_compact(classes[fwd.block_q, fwd.block_k]),
        dkv=_compact(jnp.swapaxes(classes[dkv.block_q, dkv.block_k], 1, 2)),
        dq=_compact(classes[dq.block_q, dq.block_k]),
    )


def _hopper_width(*xs: jax.Array) -> list[jax.Array]:
    """(B, T, H, Dh) operands zero-padded to a head dim the Hopper kernels take (a multiple of 32:
    their shared-memory tiles' rows are 64 bytes or more)."""
    pad = round_up(xs[0].shape[-1], 32) - xs[0].shape[-1]
    return [jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad))) for x in xs]


def _forward(q, k, v, qt: _Tokens, kt: _Tokens, sched: _Schedule, cfg: _Config):
    """-> o (B, Tq, H, Dh), lse (B, H, Tq): the Triton kernel or the Hopper one."""
    if not cfg.hopper_forward:
        return _forward_call(q, k, v, qt, kt, sched, cfg.fwd, cfg.scale, cfg.interpret)
    head_dim = q.shape[-1]
    query_bounds, key_codes = range_codes(qt, kt)
    out, lse = block_sparse_hopper.forward(
        *_hopper_width(q, k, v),
        query_bounds,
        key_codes,
        sched.rows,
        sched.launch_order,
        block_k=cfg.fwd.block_k,
        stages=cfg.fwd.num_stages,
        scale=cfg.scale,
    )
    # XLA's GPU dynamic-slice fusion (jax 0.11.2) fuses a custom call with the dynamic-update-slice
    # that stacks its outputs as a scan's residuals, and keeps an unfused copy of the call for its
    # other users: the kernel ran twice a layer. The barrier hides that pattern from it.
    out, lse = jax.lax.optimization_barrier((out, lse))
    return out[..., :head_dim], lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention(q, k, v, qt: _Tokens, kt: _Tokens, schedules: _Schedules, cfg: _Config):
    out, _ = _forward(q, k, v, qt, kt, schedules.fwd, cfg)
    return out


def _attention_fwd(q, k, v, qt, kt, schedules, cfg):
    out, lse = _forward(q, k, v, qt, kt, schedules.fwd, cfg)
    # Named so that the "attention" remat policy keeps them (the forward kernel makes both).
    out, lse = checkpoint_name(out, ATTENTION_OUT), checkpoint_name(lse, ATTENTION_LSE)
    return out, (q, k, v, qt, kt, schedules, out, lse)


def _attention_bwd(cfg: _Config, residuals, do):
    q, k, v, qt, kt, schedules, out, lse = residuals
    # Void query rows (internal padding; pad queries under skip_pad_queries) have unspecified
    # outputs, so they take no cotangent: a caller's nonzero one must not leak into dk/dv.
    void_rows = (qt.flags & _FLAG_VOID) != 0  # (B, Tq)
    do = jnp.where(void_rows[:, :, None, None], 0, do)
    # delta_i = Σ_d do_id · o_id = Σ_j p_ij dp_ij: the softmax-Jacobian term of every row, (B, H, Tq).
    delta = jnp.einsum("bthd,bthd->bht", do.astype(jnp.float32), out.astype(jnp.float32))
    do = do.astype(q.dtype)
    args = (q, k, v, do, lse, delta, qt, kt)
    if cfg.hopper_dkv or cfg.hopper_dq:
        rule = range_codes(qt, kt)  # (query bounds, key codes): the Hopper kernels' rule
        wide = _hopper_width(q, k, v, do)
    if cfg.hopper_dkv:
        stats = jnp.stack([lse, delta], axis=2)  # (B, H, 2, Tq): one copy a query tile
        dk, dv = block_sparse_hopper.dkv(
            *wide,
            stats,
            *rule,
            *schedules.dkv,
            block_q=cfg.dkv.block_q,
            stages=cfg.dkv.num_stages,
            scale=cfg.scale,
        )
        dk, dv = dk[..., : k.shape[-1]], dv[..., : v.shape[-1]]
    else:
        dk, dv = _dkv_call(*args, schedules.dkv, cfg.dkv, cfg.scale, cfg.interpret)
    if cfg.hopper_dq:
        dq = block_sparse_hopper.dq(
            *wide,
            lse,
            delta,
            *rule,
            *schedules.dq,
            block_k=cfg.dq.block_k,
            stages=cfg.dq.num_stages,
            scale=cfg.scale,
        )[..., : q.shape[-1]]
    else:
        dq = _dq_call(*args, schedules.dq, cfg.dq, cfg.scale, cfg.interpret)
    return dq, dk, dv, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _check_block(name: str, value: int) -> None:
    if value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (Triton tile shapes), got {value}")


def block_sparse_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    *,
    block_q: int = 64,
    block_k: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
    dkv: KernelConfig | None = None,
    dq: KernelConfig | None = None,
    skip_pad_queries: bool = False,
    hopper_forward: bool = False,
    hopper_dq: bool = False,
    hopper_dkv: bool = False,
    interpret: bool = False,
) -> jax.Array:
    """Softmax attention under the visibility rule, skipping fully masked tiles.

    Same contract as :func:`vgpt_jax.nn.attention.xla_attention`:
    q (B, Tq, H, Dh), k/v (B, Tk, H, Dh) -> (B, Tq, H, Dh) in q's dtype; attribute fields (B, T)
    (or (T,), shared by the batch); query i may see key j iff ``visible(q_attrs, k_attrs)[i, j]``.
    Differentiable in q, k, v (custom VJP with Pallas kernels).

    Args:
      block_q, block_k, num_warps, num_stages: forward tiles and Triton launch parameters.
      dkv, dq: tiles/launch of the dK/dV and dQ kernels (default: 64 x 64 tiles, 4 warps,
        3 stages, like the forward: the sweep's best, README "Attention kernels").
      skip_pad_queries: treat pad queries as void: their tiles are skipped, their outputs are
        unspecified (finite) and their cotangents are ignored. Off by default, which keeps the
        rule exactly. Training never reads pad outputs; there it removes the clean copies of the
        last clip from the work (about an eighth of them at training lengths).
      hopper_forward: run the forward in ``block_sparse_hopper`` (Mosaic GPU: warpgroup MMA and
        TMA; Hopper GPUs only), on 128-row query blocks (``block_q`` is ignored) with
        ``num_stages`` key tiles in flight.
      hopper_dq: run dQ in ``block_sparse_hopper`` (Hopper GPUs only), on 128-row query blocks
        (``dq.block_q`` is ignored) with ``dq.block_k`` keys a tile and ``dq.num_stages`` tiles in
        flight.
      hopper_dkv: run dK/dV in ``block_sparse_hopper`` (Hopper GPUs only), on 128-key blocks
        (``dkv.block_k`` is ignored) with ``dkv.block_q`` queries a tile and ``dkv.num_stages``
        tiles in flight.
      interpret: run the kernels with the Pallas interpreter (CPU tests).
    """
    if q.ndim != 4 or k.shape != v.shape or k.shape[::2] != q.shape[::2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"expected q (B, Tq, H, Dh) and k, v (B, Tk, H, Dh); got {q.shape}, {k.shape}, {v.shape}"
        )
    if dkv is None:
        dkv = KernelConfig(block_q=64, block_k=64, num_warps=4, num_stages=3)
    if dq is None:
        dq = KernelConfig(block_q=64, block_k=64, num_warps=4, num_stages=3)
    if (hopper_forward or hopper_dq or hopper_dkv) and interpret:
        raise ValueError("the Hopper kernels have no interpreter (Mosaic GPU): use Triton's")
    if hopper_forward:
        block_q = block_sparse_hopper.BLOCK_Q
    if hopper_dq:
        dq = dataclasses.replace(dq, block_q=block_sparse_hopper.BLOCK_Q)
    if hopper_dkv:
        dkv = dataclasses.replace(dkv, block_k=block_sparse_hopper.BLOCK_KEYS)
    fwd = KernelConfig(block_q, block_k, num_warps, num_stages)
    for name, kc in (("fwd", fwd), ("dkv", dkv), ("dq", dq)):
        _check_block(f"{name}.block_q", kc.block_q)
        _check_block(f"{name}.block_k", kc.block_k)

    batch, tq, _, head_dim = q.shape
    tk = k.shape[1]
    tq_pad = round_up(tq, max(fwd.block_q, dkv.block_q, dq.block_q))
    tk_pad = round_up(tk, max(fwd.block_k, dkv.block_k, dq.block_k))
    d_pad = sum(head_dim_blocks(head_dim))  # zero columns change no dot product

    def pad(x, length):
        return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_pad - head_dim)))

    with jax.named_scope("block_sparse_schedule"):
        qt = _prepare_tokens(q_attrs, batch, tq_pad, pad_is_void=skip_pad_queries)
        kt = _prepare_tokens(k_attrs, batch, tk_pad, pad_is_void=False)
        schedules = _schedules(qt, kt, fwd, dkv, dq)
    cfg = _Config(fwd, dkv, dq, float(head_dim) ** -0.5, interpret, hopper_forward, hopper_dq, hopper_dkv)
    out = _attention(pad(q, tq_pad), pad(k, tk_pad), pad(v, tk_pad), qt, kt, schedules, cfg)
    return out[:, :tq, :, :head_dim]
