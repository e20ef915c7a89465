"""Hopper kernels of the block-sparse attention (Pallas' Mosaic GPU backend): forward, dQ, dK/dV.

The Triton kernels of ``block_sparse_attention`` run its visible entries at ~335 TFLOP/s on an
H200; these kernels use Hopper's warpgroup MMA and the tensor-memory accelerator (TMA) the way
flash-attention 3 does. The forward has the layout of JAX's ``attention_mgpu`` example: a program
owns ``2 x 64`` query rows, two compute warpgroups (64 rows each) take turns on the tensor cores
(one runs its softmax while the other multiplies), and a third warpgroup streams key/value tiles
into shared memory ahead of them.

What makes it block-sparse is the tile list it streams: the schedule of
``block_sparse_attention`` (rows ``[n_partial, n_nonempty, partial tile ids…, full tile ids…]``
over 128-row query blocks) instead of every key tile. Full tiles skip the rule; partial tiles
apply it in registers from range codes (:func:`range_visible`): every key carries three int32
codes and every query four bounds, and

    visible(q, k)  <=>  kf <= tf  or  kc <= tc  or  lo <= kn <= hi,

four comparisons a score instead of the rule's case analysis (the codes are built by
``block_sparse_attention.range_codes``, which a CPU test checks against ``tokens.visible``).

Masked scores are a large finite negative number, not -inf, so a row whose first tiles show it
nothing needs no special case (its running max is that number; the first visible key's rescale
factor is exp2(-huge) = 0). Rows that see nothing at all end with that max and are returned as
zeros with log-sum-exp +inf, as the Triton forward returns them.

GPU only (sm90): the Mosaic GPU interpreter of jax 0.10 runs neither ``plgpu.load`` nor
``run_state`` nor a register operand of a warpgroup MMA, so no CPU test runs the kernel itself;
``tools/block_sparse_check`` checks it against the fp32 reference on the GPU, and lowering it
(``jax.jit(...).trace(...).lower(lowering_platforms=("cuda",))``) works on a CPU. The forward is
the block-sparse forward on Hopper GPUs by default (``forward_kernel="auto"``), and so are
:func:`dq` and :func:`dkv` (``dq_kernel``, ``dkv_kernel``; checked on an H200 at head dims 128 and
96), the schedules they stream being the dQ kernel's (query blocks) and the dK/dV
kernel's (key blocks, transposed). All three share one frame (:func:`_warp_specialized`): two
compute warpgroups of 64 rows and one streaming warpgroup (:func:`_stream`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

COMPUTE_WARPGROUPS = 2
WARPGROUP_ROWS = 64  # rows of one warpgroup MMA
BLOCK_Q = COMPUTE_WARPGROUPS * WARPGROUP_ROWS  # query rows a program owns: the schedule's block_q
BLOCK_KEYS = BLOCK_Q  # keys a dK/dV program owns: its schedule's block_k
_MASKED = -1e30  # a masked score (unscaled)
_LOG2_E = math.log2(math.e)
HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))  # what the kernel computes in


def range_visible(key_codes, query_bounds):
    """The in-kernel rule on broadcast operands: key codes (kf, kc, kn), query bounds (tf, tc, lo, hi)."""
    kf, kc, kn = key_codes
    tf, tc, lo, hi = query_bounds
    return (kf <= tf) | (kc <= tc) | ((kn >= lo) & (kn <= hi))


def chosen(forward_kernel: str, dtype) -> bool:
    """Whether ``forward_kernel`` ("hopper", "triton" or "auto") means this kernel here for inputs
    of ``dtype``.

    "auto" picks it on a Hopper GPU (compute capability 9.x: Mosaic GPU's warpgroup MMA is sm90's)
    for bf16 or fp16 inputs (the MMA's register operand takes no fp32), Triton's kernel otherwise.
    """
    if forward_kernel != "auto":
        return forward_kernel == "hopper"
    device = jax.devices()[0]
    hopper = device.platform == "gpu" and str(getattr(device, "compute_capability", "")).startswith("9")
    return hopper and jnp.dtype(dtype) in HALF_DTYPES


def _smem_transforms(head_dim: int, dtype) -> tuple:
    """Tiling and swizzle of a (rows, head_dim) shared-memory tile: the widest swizzle the head dim
    allows (128 bytes at 64 columns or more, 64 at 96)."""
    bits = jnp.finfo(dtype).bits
    swizzle = plgpu.find_swizzle(head_dim * bits, "the head dim")
    return plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle)


def _check_operands(q: jax.Array, k: jax.Array, q_block: int, k_block: int, stages: int) -> None:
    tq, head_dim, tk = q.shape[1], q.shape[3], k.shape[1]
    if tq % q_block or tk % k_block or head_dim % 32:
        raise ValueError(f"need Tq % {q_block}, Tk % {k_block}, D % 32 == 0; got {q.shape}, {k.shape}")
    if jnp.dtype(q.dtype) not in HALF_DTYPES:
        raise ValueError(f"the Hopper kernels take bf16 or fp16 inputs, got {q.dtype}: use Triton's")
    if stages < 2:
        raise ValueError(f"stages must be >= 2, got {stages}")


def _row_vectors(refs, rows: pl.Slice, width: int) -> tuple:
    """Per-row values of a warpgroup's 64 ``rows`` (one (T,) GMEM ref each: query bounds, a query's
    statistics, key codes), broadcast over a tile of ``width`` columns."""
    return tuple(
        lax.broadcast_in_dim(
            plgpu.load(ref, rows, layout=plgpu.Layout.WGMMA.reduce(1), optimized=False),
            (WARPGROUP_ROWS, width),
            [0],
        )
        for ref in refs
    )


def _column_vectors(smem, slot, count: int, width: int) -> tuple:
    """The ``count`` per-column vectors of the tile in ``slot`` of a (stages, count, width) shared
    buffer (a key tile's codes, a query tile's bounds or statistics), broadcast over 64 rows."""
    return tuple(
        lax.broadcast_in_dim(
            plgpu.load(smem.at[slot, i], (), layout=plgpu.Layout.WGMMA.reduce(0), optimized=False),
            (WARPGROUP_ROWS, width),
            [1],
        )
        for i in range(count)
    )


class _Program(NamedTuple):
    """Where a program is: batch row, head, warpgroup, its outer block (query or key block, from
    the launch order) and that block's schedule row (partial and non-empty tile counts, ids)."""

    b: jax.Array
    h: jax.Array
    wg: jax.Array
    block: jax.Array
    n_partial: jax.Array
    n_tiles: jax.Array
    tile_id: Callable  # step -> the step's tile (inner block) id


class _Copy(NamedTuple):
    """One buffer the streaming warpgroup fills a slot of per tile."""

    source: Callable  # the tile's columns (a pl.ds) -> its GMEM ref
    smem: object  # (stages, ...) shared buffer
    ready: object  # a barrier a slot: the copy landed
    free: object  # a barrier a slot to wait for before refilling it; None: an earlier copy's


def _stream(program: _Program, copies, partial_copies, block: int, stages: int) -> None:
    """The streaming warpgroup: per tile ``t`` of the program's schedule row (``block`` columns from
    ``tile_id(t) · block``), the ``copies`` into slot ``t % stages``, and on partial tiles the
    ``partial_copies``, which wait for no barrier of their own: the compute warpgroups read them
    before releasing the copies' slot."""
    plgpu.set_max_registers(40, action="decrease")
    n_partial, n_tiles, tile_id = program.n_partial, program.n_tiles, program.tile_id

    def fetch(t, slot, wait: bool):
        # The tile id is read before the waits, so that its latency hides behind them.
        cols = pl.ds(tile_id(t) * block, block)
        for copy in copies:
            if wait and copy.free is not None:
                plgpu.barrier_wait(copy.free.at[slot])
            plgpu.copy_gmem_to_smem(copy.source(cols), copy.smem.at[slot], copy.ready.at[slot])

        @pl.when(t < n_partial)
        def _():
            for copy in partial_copies:
                plgpu.copy_gmem_to_smem(copy.source(cols), copy.smem.at[slot], copy.ready.at[slot])

    for t in range(stages):
        pl.when(t < n_tiles)(lambda t=t: fetch(t, t, wait=False))

    @pl.loop(stages, n_tiles)
    def _(t):
        fetch(t, lax.rem(t, stages), wait=True)


def _warp_specialized(rows_ref, launch_ref, seq_axis: str, compute, stream) -> None:
    """The kernels' common frame: the program's place, then ``compute(program)`` on the compute
    warpgroups and ``stream(program)`` on the last one. ``rows_ref``/``launch_ref`` are the
    schedule's (B, n_outer, 2 + n_inner) rows and (B, n_outer) launch order; ``seq_axis`` the grid
    axis over outer blocks."""
    b = lax.axis_index("batch")
    wg = lax.axis_index("wg")
    block = launch_ref[b, lax.axis_index(seq_axis)]
    program = _Program(
        b,
        lax.axis_index("heads"),
        wg,
        block,
        rows_ref[b, block, 0],
        rows_ref[b, block, 1],
        lambda t: rows_ref[b, block, 2 + t],
    )
    pl.when(wg < COMPUTE_WARPGROUPS)(lambda: compute(program))
    pl.when(wg == COMPUTE_WARPGROUPS)(lambda: stream(program))


def _launch(body, out_type, heads: int, outer_blocks: int, batch: int, seq_axis: str):
    """``plgpu.kernel`` of a :func:`_warp_specialized` body: a program per (head, outer block,
    batch row), two compute warpgroups and one streaming warpgroup."""
    return plgpu.kernel(
        body,
        out_type=out_type,
        grid=(heads, outer_blocks, batch),
        grid_names=("heads", seq_axis, "batch"),
        num_threads=COMPUTE_WARPGROUPS + 1,
        thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )


def _stream_key_tiles(k_ref, v_ref, codes_ref, program: _Program, buffers, block_k: int, stages: int) -> None:
    """The forward's and dQ's streaming: key and value tiles, and a partial tile's key codes;
    ``buffers``: (k, v, codes) shared buffers, their ready barriers, (k, v) free barriers."""
    (k_smem, v_smem, codes_smem), (k_ready, v_ready, codes_ready), (k_free, v_free) = buffers
    b, h = program.b, program.h
    _stream(
        program,
        [
            _Copy(lambda cols: k_ref.at[b, cols, h], k_smem, k_ready, k_free),
            _Copy(lambda cols: v_ref.at[b, cols, h], v_smem, v_ready, v_free),
        ],
        [_Copy(lambda cols: codes_ref.at[b, :, cols], codes_smem, codes_ready, None)],
        block_k,
        stages,
    )


def _zero_accumulator(head_dim: int) -> jax.Array:
    """A warpgroup's (64, head_dim) fp32 accumulator of zeros, in the MMA's register layout."""
    return plgpu.layout_cast(jnp.full((WARPGROUP_ROWS, head_dim), 0.0, jnp.float32), plgpu.Layout.WGMMA)


def _product_t(a_smem, b_smem, cols: int) -> jax.Array:
    """a · bᵀ, a (64, D) and b (cols, D) in shared memory, as a fresh fp32 (64, cols) value."""

    def run(acc_ref):
        plgpu.wgmma(acc_ref, a_smem, plgpu.transpose_ref(b_smem, (1, 0)))
        return acc_ref[...]

    return pl.run_scoped(run, plgpu.ACC((WARPGROUP_ROWS, cols), jnp.float32))


def _accumulate(acc: jax.Array, a: jax.Array, b_smem) -> jax.Array:
    """acc + a · b: a (64, K) in registers (half precision), b (K, D) in shared memory."""

    def run(acc_ref):
        plgpu.wgmma(acc_ref, a, b_smem)

    return pl.run_state(run)(plgpu.ACC.init(acc))


def _tile_smem(head_dim: int, dtype, block_k: int, stages: int) -> list:
    """Shared memory of the streamed tiles: keys, values (``stages`` slots each) and key codes."""
    transforms = _smem_transforms(head_dim, dtype)
    return [
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((stages, 3, block_k), jnp.int32),
    ]


def _tile_barriers(stages: int) -> tuple:
    """(k_ready, v_ready, codes_ready), (k_free, v_free): a barrier a slot each."""
    ready = tuple(plgpu.Barrier(num_barriers=stages) for _ in range(3))
    free = (plgpu.Barrier(num_arrivals=COMPUTE_WARPGROUPS, num_barriers=stages),) * 2
    return ready, free


def forward(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    query_bounds: jax.Array,
    key_codes: jax.Array,
    rows: jax.Array,
    launch_order: jax.Array,
    *,
    block_k: int,
    stages: int,
    scale: float,
) -> tuple[jax.Array, jax.Array]:
    """Block-sparse attention forward on a Hopper GPU.

    Args:
      q: (B, Tq, H, D), k/v: (B, Tk, H, D), bf16 or fp16; Tq a multiple of 128, Tk of
        ``block_k``, D a multiple of 32 (96 is computed as it is: 64-byte swizzled tiles).
      query_bounds: (B, 4, Tq) int32 (tf, tc, lo, hi); key_codes: (B, 3, Tk) int32 (kf, kc, kn).
      rows: (B, Tq / 128, 2 + Tk / block_k) int32, the compacted schedule; launch_order:
        (B, Tq / 128) int32, the query blocks heaviest first.
      block_k: keys a tile (64 or 128); stages: key/value tiles in flight (>= 2).
    Returns:
      out (B, Tq, H, D) in q's dtype and the log-sum-exp (B, H, Tq) fp32 in base 2 of the scaled
      scores (+inf on rows that see no key).
    """
    _check_operands(q, k, BLOCK_Q, block_k, stages)
    batch, tq, heads, head_dim = q.shape
    dtype = q.dtype
    scale_log2 = scale * _LOG2_E
    empty_below = 0.5 * _MASKED * scale_log2  # a row max below this saw no visible key
    row_layout = plgpu.Layout.WGMMA.reduce(1)

    def kernel(q_ref, k_ref, v_ref, bounds_ref, codes_ref, rows_ref, launch_ref, out_ref, lse_ref, scoped):
        (qo_smem2, k_smem, v_smem, codes_smem, lse_smem2), ready, (k_free, v_free), turn = scoped
        k_ready, v_ready, codes_ready, q_ready = ready

        def take_turn():  # the two compute warpgroups alternate on the tensor cores
            plgpu.barrier_arrive(turn)
            plgpu.barrier_wait(turn)

        def compute(program: _Program):
            b, h, wg, qb, n_partial, n_tiles, _ = program
            plgpu.set_max_registers(232, action="increase")
            qo_smem, lse_smem = qo_smem2.at[wg], lse_smem2.at[wg]
            q_rows = pl.ds(qb * BLOCK_Q + wg * WARPGROUP_ROWS, WARPGROUP_ROWS)
            plgpu.copy_gmem_to_smem(q_ref.at[b, q_rows, h], qo_smem, q_ready.at[wg])
            bounds = _row_vectors([bounds_ref.at[b, i] for i in range(4)], q_rows, block_k)
            plgpu.barrier_wait(q_ready.at[wg])
            m_i = plgpu.layout_cast(jnp.full((WARPGROUP_ROWS,), -jnp.inf, jnp.float32), row_layout)
            l_i = plgpu.layout_cast(jnp.full((WARPGROUP_ROWS,), 0.0, jnp.float32), row_layout)
            acc = _zero_accumulator(head_dim)

            @pl.when(n_tiles > 0)
            def _():
                plgpu.barrier_wait(k_ready.at[0])

            pl.when(wg == 1)(take_turn)

            def step(t, carry, masked: bool):
                acc, m_i, l_i = carry
                slot = lax.rem(t, stages)

                def scores(acc_ref):
                    plgpu.wgmma(acc_ref, qo_smem, plgpu.transpose_ref(k_smem.at[slot], (1, 0)))
                    take_turn()
                    return acc_ref[...]

                s = pl.run_scoped(scores, plgpu.ACC((WARPGROUP_ROWS, block_k), jnp.float32))
                plgpu.barrier_arrive(k_free.at[slot])
                if masked:  # the tile's key codes came with its keys, into shared memory
                    plgpu.barrier_wait(codes_ready.at[slot])
                    s = jnp.where(
                        range_visible(_column_vectors(codes_smem, slot, 3, block_k), bounds), s, _MASKED
                    )
                # Online softmax in base 2, the scale folded into exp2's argument (one FMA a score).
                m_new = jnp.maximum(m_i, s.max(axis=1) * scale_log2)
                alpha = jnp.exp2(m_i - m_new)
                p = jnp.exp2(s * scale_log2 - lax.broadcast_in_dim(m_new, s.shape, [0]))
                acc *= lax.broadcast_in_dim(alpha, acc.shape, [0])
                l_i = l_i * alpha + p.sum(axis=1)
                p_low = p.astype(dtype)
                # The order of the softmax's results and the barriers below matters for speed (as in
                # JAX's example): the barrier pins it.
                acc, l_i, m_new, p_low = lax.optimization_barrier((acc, l_i, m_new, p_low))
                plgpu.barrier_arrive(turn)
                plgpu.barrier_wait(v_ready.at[slot])
                plgpu.barrier_wait(turn)

                def values(acc_ref):
                    plgpu.wgmma(acc_ref, p_low, v_smem.at[slot])
                    nxt = t + 1

                    @pl.when(nxt < n_tiles)
                    def _():
                        plgpu.barrier_wait(k_ready.at[lax.rem(nxt, stages)])

                acc = pl.run_state(values)(plgpu.ACC.init(acc))
                plgpu.barrier_arrive(v_free.at[slot])
                return acc, m_new, l_i

            carry = (acc, m_i, l_i)
            carry = lax.fori_loop(0, n_partial, lambda t, c: step(t, c, masked=True), carry)
            acc, m_i, l_i = lax.fori_loop(n_partial, n_tiles, lambda t, c: step(t, c, masked=False), carry)
            pl.when(wg == 0)(take_turn)

            empty = m_i < empty_below
            inv = jnp.where(empty, 0.0, 1.0 / jnp.where(empty, 1.0, l_i))
            acc *= lax.broadcast_in_dim(inv, acc.shape, [0])
            qo_smem[...] = acc.astype(dtype)
            lse_smem[...] = jnp.where(empty, jnp.inf, m_i + jnp.log2(jnp.where(empty, 1.0, l_i)))
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(qo_smem, out_ref.at[b, q_rows, h])
            plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[b, h, q_rows])
            plgpu.wait_smem_to_gmem(0)

        key_buffers = ((k_smem, v_smem, codes_smem), (k_ready, v_ready, codes_ready), (k_free, v_free))
        _warp_specialized(
            rows_ref,
            launch_ref,
            "q_seq",
            compute,
            lambda program: _stream_key_tiles(k_ref, v_ref, codes_ref, program, key_buffers, block_k, stages),
        )

    # Its name is the kernel's name in profiles.
    def block_sparse_attention_fwd_hopper(
        q_ref, k_ref, v_ref, bounds_ref, codes_ref, rows_ref, launch_ref, out_ref, lse_ref
    ):
        (k_ready, v_ready, codes_ready), free = _tile_barriers(stages)
        pl.run_scoped(
            lambda *scoped: kernel(
                q_ref, k_ref, v_ref, bounds_ref, codes_ref, rows_ref, launch_ref, out_ref, lse_ref, scoped
            ),
            [
                plgpu.SMEM(
                    (COMPUTE_WARPGROUPS, WARPGROUP_ROWS, head_dim),
                    dtype,
                    transforms=_smem_transforms(head_dim, dtype),
                ),
                *_tile_smem(head_dim, dtype, block_k, stages),
                plgpu.SMEM((COMPUTE_WARPGROUPS, WARPGROUP_ROWS), jnp.float32),
            ],
            (k_ready, v_ready, codes_ready, plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS)),
            free,
            plgpu.Barrier(num_arrivals=COMPUTE_WARPGROUPS),
            collective_axes="wg",
        )

    out_type = (jax.ShapeDtypeStruct(q.shape, dtype), jax.ShapeDtypeStruct((batch, heads, tq), jnp.float32))
    out, lse = _launch(block_sparse_attention_fwd_hopper, out_type, heads, tq // BLOCK_Q, batch, "q_seq")(
        q, k, v, query_bounds, key_codes, rows, launch_order
    )
    return out, lse


def dq(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    do: jax.Array,
    lse: jax.Array,
    delta: jax.Array,
    query_bounds: jax.Array,
    key_codes: jax.Array,
    rows: jax.Array,
    launch_order: jax.Array,
    *,
    block_k: int,
    stages: int,
    scale: float,
) -> jax.Array:
    """The query gradient of block-sparse attention on a Hopper GPU.

    dq = scale · Σ_k (p ∘ (do·vᵀ − delta))·k over the schedule's tiles of each 128-row query block,
    p = exp2(scale·log2(e)·q·kᵀ − lse): three warpgroup MMAs a tile (q·kᵀ and do·vᵀ from shared
    memory, ds·k with ds in registers), the tiles streamed as in :func:`forward`. Each of the two
    compute warpgroups owns 64 rows and runs on its own (no ping-pong: the softmax's work a tile
    is one exp2 and two multiplies).

    Args: as :func:`forward`'s, plus do (B, Tq, H, D) in q's dtype, lse (B, H, Tq) fp32 as
      :func:`forward` returns it (+inf: the row sees nothing, its gradient is 0) and delta (B, H,
      Tq) fp32 = Σ_d do·out. Returns dq (B, Tq, H, D) in q's dtype.
    """
    _check_operands(q, k, BLOCK_Q, block_k, stages)
    batch, tq, heads, head_dim = q.shape
    dtype = q.dtype
    scale_log2 = scale * _LOG2_E

    def kernel(refs, scoped):
        (
            q_ref,
            k_ref,
            v_ref,
            do_ref,
            lse_ref,
            delta_ref,
            bounds_ref,
            codes_ref,
            rows_ref,
            launch_ref,
            dq_ref,
        ) = refs
        (q_smem2, do_smem2, k_smem, v_smem, codes_smem), ready, (k_free, v_free) = scoped
        k_ready, v_ready, codes_ready, q_ready, do_ready = ready

        def compute(program: _Program):
            b, h, wg, qb, n_partial, n_tiles, _ = program
            plgpu.set_max_registers(232, action="increase")
            q_smem, do_smem = q_smem2.at[wg], do_smem2.at[wg]
            q_rows = pl.ds(qb * BLOCK_Q + wg * WARPGROUP_ROWS, WARPGROUP_ROWS)
            plgpu.copy_gmem_to_smem(q_ref.at[b, q_rows, h], q_smem, q_ready.at[wg])
            plgpu.copy_gmem_to_smem(do_ref.at[b, q_rows, h], do_smem, do_ready.at[wg])
            bounds = _row_vectors([bounds_ref.at[b, i] for i in range(4)], q_rows, block_k)
            lse, delta = _row_vectors([lse_ref.at[b, h], delta_ref.at[b, h]], q_rows, block_k)
            plgpu.barrier_wait(q_ready.at[wg])
            plgpu.barrier_wait(do_ready.at[wg])
            acc = _zero_accumulator(head_dim)

            def step(t, acc, masked: bool):
                slot = lax.rem(t, stages)
                plgpu.barrier_wait(k_ready.at[slot])

                s = _product_t(q_smem, k_smem.at[slot], block_k)
                plgpu.barrier_wait(v_ready.at[slot])
                dp = _product_t(do_smem, v_smem.at[slot], block_k)
                p = jnp.exp2(s * scale_log2 - lse)
                if masked:  # the codes are read before the values' slot is released
                    plgpu.barrier_wait(codes_ready.at[slot])
                    p = jnp.where(
                        range_visible(_column_vectors(codes_smem, slot, 3, block_k), bounds), p, 0.0
                    )
                plgpu.barrier_arrive(v_free.at[slot])
                ds = (p * (dp - delta)).astype(dtype)

                acc = _accumulate(acc, ds, k_smem.at[slot])
                plgpu.barrier_arrive(k_free.at[slot])
                return acc

            acc = lax.fori_loop(0, n_partial, lambda t, a: step(t, a, masked=True), acc)
            acc = lax.fori_loop(n_partial, n_tiles, lambda t, a: step(t, a, masked=False), acc)
            q_smem[...] = (acc * scale).astype(dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(q_smem, dq_ref.at[b, q_rows, h])
            plgpu.wait_smem_to_gmem(0)

        key_buffers = ((k_smem, v_smem, codes_smem), (k_ready, v_ready, codes_ready), (k_free, v_free))
        _warp_specialized(
            rows_ref,
            launch_ref,
            "q_seq",
            compute,
            lambda program: _stream_key_tiles(k_ref, v_ref, codes_ref, program, key_buffers, block_k, stages),
        )

    # Its name is the kernel's name in profiles.
    def block_sparse_attention_dq_hopper(*refs):
        transforms = _smem_transforms(head_dim, dtype)
        rows_smem = plgpu.SMEM((COMPUTE_WARPGROUPS, WARPGROUP_ROWS, head_dim), dtype, transforms=transforms)
        (k_ready, v_ready, codes_ready), free = _tile_barriers(stages)
        pl.run_scoped(
            lambda *scoped: kernel(refs, scoped),
            [rows_smem, rows_smem, *_tile_smem(head_dim, dtype, block_k, stages)],
            (
                k_ready,
                v_ready,
                codes_ready,
                plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS),
                plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS),
            ),
            free,
            collective_axes="wg",
        )

    out_type = jax.ShapeDtypeStruct(q.shape, dtype)
    return _launch(block_sparse_attention_dq_hopper, out_type, heads, tq // BLOCK_Q, batch, "q_seq")(
        q, k, v, do, lse, delta, query_bounds, key_codes, rows, launch_order
    )


def dkv(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    do: jax.Array,
    stats: jax.Array,
    query_bounds: jax.Array,
    key_codes: jax.Array,
    rows: jax.Array,
    launch_order: jax.Array,
    *,
    block_q: int,
    stages: int,
    scale: float,
) -> tuple[jax.Array, jax.Array]:
    """The key and value gradients of block-sparse attention on a Hopper GPU.

    A program owns 128 keys (two compute warpgroups of 64) and streams the query tiles that see
    them (the transposed schedule), keys on rows: sᵀ = k·qᵀ, pᵀ = exp2(scale·log2(e)·sᵀ − lse),
    dv += pᵀ·do, dsᵀ = pᵀ ∘ (v·doᵀ − delta), dk += dsᵀ·q; four warpgroup MMAs a tile, the query
    tile's statistics and (on partial tiles) its bounds streamed beside its rows.

    Args:
      q, do: (B, Tq, H, D); k, v: (B, Tk, H, D), bf16 or fp16; Tq a multiple of ``block_q``, Tk of
        128, D of 32. stats: (B, H, 2, Tq) fp32, the forward's log-sum-exp (base 2, scaled; +inf on
        rows that see nothing) and delta = Σ_d do·out. query_bounds (B, 4, Tq), key_codes (B, 3, Tk)
        int32 as :func:`forward`'s. rows: (B, Tk / 128, 2 + Tq / block_q) int32, the schedule over
        128-key blocks; launch_order: (B, Tk / 128).
      block_q: queries a tile (64 or 128); stages: query tiles in flight (>= 2).
    Returns:
      dk, dv (B, Tk, H, D) in k's dtype.
    """
    _check_operands(q, k, block_q, BLOCK_KEYS, stages)
    batch, _, heads, head_dim = q.shape
    tk = k.shape[1]
    dtype = q.dtype
    scale_log2 = scale * _LOG2_E

    def kernel(refs, scoped):
        q_ref, k_ref, v_ref, do_ref, stats_ref, bounds_ref, codes_ref, rows_ref, launch_ref = refs[:-2]
        dk_ref, dv_ref = refs[-2:]
        (k_smem2, v_smem2, q_smem, do_smem, stats_smem, bounds_smem), ready, slot_free = scoped
        q_ready, do_ready, stats_ready, bounds_ready, k_ready, v_ready = ready

        def compute(program: _Program):
            b, h, wg, kb, n_partial, n_tiles, _ = program
            plgpu.set_max_registers(232, action="increase")
            k_smem, v_smem = k_smem2.at[wg], v_smem2.at[wg]
            k_rows = pl.ds(kb * BLOCK_KEYS + wg * WARPGROUP_ROWS, WARPGROUP_ROWS)
            plgpu.copy_gmem_to_smem(k_ref.at[b, k_rows, h], k_smem, k_ready.at[wg])
            plgpu.copy_gmem_to_smem(v_ref.at[b, k_rows, h], v_smem, v_ready.at[wg])
            codes = _row_vectors([codes_ref.at[b, i] for i in range(3)], k_rows, block_q)
            plgpu.barrier_wait(k_ready.at[wg])
            plgpu.barrier_wait(v_ready.at[wg])
            zeros = _zero_accumulator(head_dim)

            def step(t, carry, masked: bool):
                dk, dv = carry
                slot = lax.rem(t, stages)
                plgpu.barrier_wait(q_ready.at[slot])

                s_t = _product_t(k_smem, q_smem.at[slot], block_q)
                plgpu.barrier_wait(stats_ready.at[slot])
                lse, delta = _column_vectors(stats_smem, slot, 2, block_q)
                p_t = jnp.exp2(s_t * scale_log2 - lse)
                if masked:  # the query tile's bounds came with its rows
                    plgpu.barrier_wait(bounds_ready.at[slot])
                    bounds = _column_vectors(bounds_smem, slot, 4, block_q)
                    p_t = jnp.where(range_visible(codes, bounds), p_t, 0.0)
                plgpu.barrier_wait(do_ready.at[slot])

                dv = _accumulate(dv, p_t.astype(dtype), do_smem.at[slot])
                dp_t = _product_t(v_smem, do_smem.at[slot], block_q)
                ds_t = (p_t * (dp_t - delta)).astype(dtype)

                dk = _accumulate(dk, ds_t, q_smem.at[slot])
                plgpu.barrier_arrive(slot_free.at[slot])
                return dk, dv

            carry = lax.fori_loop(0, n_partial, lambda t, c: step(t, c, masked=True), (zeros, zeros))
            dk, dv = lax.fori_loop(n_partial, n_tiles, lambda t, c: step(t, c, masked=False), carry)
            k_smem[...] = (dk * scale).astype(dtype)
            v_smem[...] = dv.astype(dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(k_smem, dk_ref.at[b, k_rows, h])
            plgpu.copy_smem_to_gmem(v_smem, dv_ref.at[b, k_rows, h])
            plgpu.wait_smem_to_gmem(0)

        def stream(program: _Program):
            b, h = program.b, program.h
            _stream(
                program,
                [
                    _Copy(lambda cols: q_ref.at[b, cols, h], q_smem, q_ready, slot_free),
                    _Copy(lambda cols: do_ref.at[b, cols, h], do_smem, do_ready, None),
                    _Copy(lambda cols: stats_ref.at[b, h, :, cols], stats_smem, stats_ready, None),
                ],
                [_Copy(lambda cols: bounds_ref.at[b, :, cols], bounds_smem, bounds_ready, None)],
                block_q,
                stages,
            )

        _warp_specialized(rows_ref, launch_ref, "k_seq", compute, stream)

    # Its name is the kernel's name in profiles.
    def block_sparse_attention_dkv_hopper(*refs):
        transforms = _smem_transforms(head_dim, dtype)
        own_rows = plgpu.SMEM((COMPUTE_WARPGROUPS, WARPGROUP_ROWS, head_dim), dtype, transforms=transforms)
        query_tiles = plgpu.SMEM((stages, block_q, head_dim), dtype, transforms=transforms)
        per_slot = plgpu.Barrier(num_barriers=stages)
        per_warpgroup = plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS)
        pl.run_scoped(
            lambda *scoped: kernel(refs, scoped),
            [
                own_rows,
                own_rows,
                query_tiles,
                query_tiles,
                plgpu.SMEM((stages, 2, block_q), jnp.float32),
                plgpu.SMEM((stages, 4, block_q), jnp.int32),
            ],
            (per_slot, per_slot, per_slot, per_slot, per_warpgroup, per_warpgroup),
            plgpu.Barrier(num_arrivals=COMPUTE_WARPGROUPS, num_barriers=stages),
            collective_axes="wg",
        )

    out_type = (jax.ShapeDtypeStruct(k.shape, dtype), jax.ShapeDtypeStruct(v.shape, dtype))
    return _launch(block_sparse_attention_dkv_hopper, out_type, heads, tk // BLOCK_KEYS, batch, "k_seq")(
        q, k, v, do, stats, query_bounds, key_codes, rows, launch_order
    )
