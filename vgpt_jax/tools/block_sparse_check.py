"""GPU check of the block-sparse attention kernels: correctness against ``xla`` and timings.

Run on a machine with a GPU (needs only jax, flax and numpy):

    PYTHONPATH=$PWD python3 -m vgpt_jax.tools.block_sparse_check [--no-sweep] [--frames 48]

1. bf16 values and gradients at ~4k tokens of a real training layout (16 heads x 128) against
   ``xla_attention``: both our kernels and XLA in bf16 are compared with an fp32 XLA reference
   (highest matmul precision) on the same bf16-rounded inputs; ours must stay within bf16 noise.
2. Timings at 48 frames x 222 tokens x 2 = 21,312 tokens: ours (fwd, fwd+bwd; with and without
   skipping pad queries; three kinds of partition) against cuDNN flash attention without a mask
   and with token-causal skipping, JAX's Mosaic GPU (Hopper) flash-attention example, and the
   chunked ``xla`` backend; the XLA-side schedule cost;
   then ours and cuDNN at 80 frames (35,520 tokens). TFLOP/s count visible entries only:
   fwd 4·E·Dh·H, fwd+bwd 3.5x that (the usual flash-attention convention), E = visible pairs.
3. A sweep of tile sizes / warps / stages per kernel (fwd, dK/dV, dQ) at 21k tokens, with the
   best configs also run on an all-full schedule (raw kernel speed on L x L) next to JAX's own
   Pallas flash attention.
4. The sampler's clip attention (``clip_attention``: the clip's own keys and the cached history,
   merged) at the release sampler's sizes against the fp32 reference, timed beside the keys
   joined into one call and beside the block-sparse kernel.

On a GPU, 1 and 2 also run the Hopper forward (``hopper_forward``, ``HOPPER_CONFIGS``) with
Triton's backward, with the Hopper dQ (``hopper_dq``, ``HOPPER_DQ_CONFIGS``) and with the Hopper
dK/dV as well (``hopper_dkv``, ``HOPPER_DKV_CONFIGS``); ``--layer-loop``
times the forwards in a 20-call ``lax.scan`` as a model calls them (chained, on fresh inputs, after
matmuls, with the schedule computed at run time).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from vgpt_jax.models import layout
from vgpt_jax.nn import block_sparse_attention as bsa
from vgpt_jax.nn.attention import KVPrefix, clip_attention, xla_attention
from vgpt_jax.nn.tokens import TokenAttrs, concat_attrs, round_up, visible
from vgpt_jax.train.flops import official_partition

HEADS, HEAD_DIM, PATCHES = 16, 128, 220
INTERPRET = False
KERNEL_KW: dict = {}  # extra block_sparse_attention keywords (``--interpret`` for a CPU dry run)
START = time.perf_counter()
RESULTS: dict = {}


def log(*args) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s]", *args, flush=True)


def training_attrs(num_frames: int, seed: int) -> TokenAttrs:
    """A random official partition of ``num_frames`` frames -> attributes (1, 2·N·222)."""
    clip_ids = layout.random_clip_ids(jax.random.key(seed), num_frames)
    attrs, _ = layout.training_layout(clip_ids[None], PATCHES)
    log(f"partition seed {seed}: clips {np.bincount(np.asarray(clip_ids)).tolist()}")
    return attrs


def random_inputs(tokens: int, seed: int, dtype=jnp.bfloat16):
    keys = jax.random.split(jax.random.key(seed), 4)
    shape = (1, tokens, HEADS, HEAD_DIM)
    return tuple(jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in keys)


def bench(fn, *args, iters: int = 10, warmup: int = 2) -> float:
    """Milliseconds per call (back-to-back async calls, one sync at the end)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    out = None
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / iters * 1e3


def visible_pairs(attrs: TokenAttrs, *, real_queries_only: bool = False) -> int:
    """Exact number of visible (query, key) pairs, counted 1024 query rows at a time."""
    tokens = attrs.kind.shape[-1]
    chunk = 1024
    pad = -tokens % chunk

    @jax.jit
    def count(attrs):
        keys = TokenAttrs(*(a[0] for a in attrs))

        def rows(i):
            q = TokenAttrs(
                *(jax.lax.dynamic_slice_in_dim(jnp.pad(a[0], (0, pad)), i * chunk, chunk) for a in attrs)
            )
            real = (jnp.arange(chunk) + i * chunk) < tokens
            if real_queries_only:
                real &= ~q.is_pad
            return jnp.sum(visible(q, keys) & real[:, None], dtype=jnp.int32)  # <= 1024·T fits

        return jax.lax.map(rows, jnp.arange((tokens + pad) // chunk))

    return int(np.sum(np.asarray(count(attrs), np.int64)))


# (block_k, stages) of the Hopper forward (block_sparse_hopper) that the check and timings run.
HOPPER_CONFIGS = [(128, 2), (64, 2), (64, 3)]


def hopper_kwargs(block_k: int, stages: int) -> dict:
    return {"hopper_forward": True, "block_k": block_k, "num_stages": stages}


# (block_k, stages) of the Hopper dQ kernel, each run after the Hopper forward at 128 x 2.
HOPPER_DQ_CONFIGS = [(64, 2), (64, 3), (128, 2)]


def hopper_dq_kwargs(block_k: int, stages: int) -> dict:
    dq = bsa.KernelConfig(block_q=128, block_k=block_k, num_warps=4, num_stages=stages)
    return {**hopper_kwargs(128, 2), "hopper_dq": True, "dq": dq}


# (block_q, stages) of the Hopper dK/dV kernel, each run after the Hopper forward and dQ (64 x 3).
HOPPER_DKV_CONFIGS = [(64, 2), (64, 3), (128, 2)]


def hopper_dkv_kwargs(block_q: int, stages: int) -> dict:
    dkv = bsa.KernelConfig(block_q=block_q, block_k=128, num_warps=4, num_stages=stages)
    return {**hopper_dq_kwargs(64, 3), "hopper_dkv": True, "dkv": dkv}


def hopper_variants(forwards: int = len(HOPPER_CONFIGS)) -> list[tuple[str, dict]]:
    """(label, block_sparse_attention keywords) of the Hopper kernels' runs on a GPU (none
    elsewhere): the first ``forwards`` forwards, then dQ and dK/dV added in turn."""
    if jax.default_backend() != "gpu":
        return []
    return [
        *((f"hopper fwd {bk}x{st}", hopper_kwargs(bk, st)) for bk, st in HOPPER_CONFIGS[:forwards]),
        *((f"hopper fwd + dq {bk}x{st}", hopper_dq_kwargs(bk, st)) for bk, st in HOPPER_DQ_CONFIGS),
        *((f"hopper all, dkv {bq}x{st}", hopper_dkv_kwargs(bq, st)) for bq, st in HOPPER_DKV_CONFIGS),
    ]


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


# ----------------------------------------------------------------------------------------------
# 1. correctness
# ----------------------------------------------------------------------------------------------


def check_correctness(num_frames: int) -> bool:
    attrs = training_attrs(num_frames, seed=1)
    tokens = attrs.kind.shape[-1]
    q, k, v, ct = random_inputs(tokens, seed=0)
    log(f"correctness: {tokens} tokens, {HEADS} heads x {HEAD_DIM}, bf16")

    def grads_of(attn):
        @jax.jit
        def run(q, k, v, ct):
            out, vjp = jax.vjp(attn, q, k, v)
            return (out, *vjp(ct))

        return run

    reference = grads_of(lambda q, k, v: xla_attention(q, k, v, attrs, attrs, query_chunk=4096))
    real = ~attrs.is_pad[0]
    ok = True
    variants = [("block_sparse", {}), ("block_sparse skip_pad", {"skip_pad_queries": True})]
    variants += [(label, {"skip_pad_queries": True, **kw}) for label, kw in hopper_variants()]
    for name, kwargs in variants:
        skip = bool(kwargs.get("skip_pad_queries"))
        # Skipped pad queries: their outputs are unspecified, so they get no cotangent and are
        # left out of the output comparison.
        ct_used = ct * real[None, :, None, None].astype(ct.dtype) if skip else ct
        with jax.default_matmul_precision("highest"):
            want = reference(*(x.astype(jnp.float32) for x in (q, k, v, ct_used)))
        xla16 = reference(q, k, v, ct_used)
        ours = grads_of(
            lambda q, k, v, kw=kwargs: bsa.block_sparse_attention(q, k, v, attrs, attrs, **kw, **KERNEL_KW)
        )
        got = ours(q, k, v, ct_used)
        for i, label in enumerate(("out", "dq", "dk", "dv")):
            g, w, b = got[i], want[i], xla16[i]
            if label == "out" and skip:
                g, w, b = g[:, real], w[:, real], b[:, real]
            ours_err, xla_err = rel_err(g, w), rel_err(b, w)
            max_abs = float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)))
            passed = bool(np.isfinite(ours_err)) and ours_err <= 2.0 * xla_err + 2e-3
            ok &= passed
            log(
                f"  {name:22s} {label}: rel err {ours_err:.2e} (xla bf16 {xla_err:.2e}),"
                f" max abs {max_abs:.2e}  {'OK' if passed else 'FAIL'}"
            )
            RESULTS.setdefault("correctness", {})[f"{name}/{label}"] = [ours_err, xla_err, max_abs, passed]
    return ok


# ----------------------------------------------------------------------------------------------
# 2. timings
# ----------------------------------------------------------------------------------------------


def fwd_and_grad(attn):
    fwd = jax.jit(attn)

    @jax.jit
    def fwd_bwd(q, k, v, ct):
        _, vjp = jax.vjp(attn, q, k, v)
        return vjp(ct)

    return fwd, fwd_bwd


def time_kernels(num_frames: int) -> None:
    attrs = training_attrs(num_frames, seed=2)
    tokens = attrs.kind.shape[-1]
    q, k, v, ct = random_inputs(tokens, seed=3)
    e_all = visible_pairs(attrs)
    e_real = visible_pairs(attrs, real_queries_only=True)
    log(
        f"timing: {tokens} tokens; visible fraction {e_all / tokens**2:.4f}"
        f" (real queries {e_real / tokens**2:.4f})"
    )
    unit = 4.0 * HEAD_DIM * HEADS  # fwd flops per visible entry (QKᵀ and PV), batch 1

    classes = jax.jit(bsa.tile_classes, static_argnums=(2, 3), static_argnames="skip_pad_queries")
    for skip in (False, True):
        c = np.asarray(classes(attrs, attrs, 128, 128, skip_pad_queries=skip))
        log(
            f"  tiles 128x128 skip_pad={skip}: non-empty {np.mean(c != 0):.4f},"
            f" partial {np.mean(c == 1):.4f}, full {np.mean(c == 2):.4f}"
        )

    def schedule_only(attrs):  # what block_sparse_attention adds in XLA before the kernels
        tp = -(-tokens // 64) * 64
        qt = bsa._prepare_tokens(attrs, 1, tp, pad_is_void=True)
        kt = bsa._prepare_tokens(attrs, 1, tp, pad_is_void=False)
        fwd = bsa.KernelConfig(64, 64, 4, 4)
        return bsa._schedules(qt, kt, fwd, bsa.KernelConfig(64, 64, 4, 3), bsa.KernelConfig(64, 64, 4, 3))

    ms = bench(jax.jit(schedule_only), attrs, iters=20)
    log(f"  schedule of the default tiling (summaries, classes, 2 compactions): {ms:.3f} ms")
    RESULTS["schedule_ms"] = ms

    rows = []

    def add(name, attn, entries, iters=10, backward=True, inputs=(q, k, v, ct)):
        try:
            fwd, fwd_bwd = fwd_and_grad(attn)
            t_f = bench(fwd, *inputs[:3], iters=iters)
            t_fb = bench(fwd_bwd, *inputs, iters=iters) if backward else 0.0
            rows.append((name, t_f, t_fb, entries))
            fb = f"{t_fb:8.2f} ms {3.5 * unit * entries / t_fb / 1e9:6.0f}" if t_fb else "      -"
            log(f"  {name:40s} fwd {t_f:7.2f} ms {unit * entries / t_f / 1e9:6.0f} TFLOP/s | fwd+bwd {fb}")
        except Exception as err:  # keep going: one failing baseline must not hide the others
            log(f"  {name}: FAILED {type(err).__name__}: {str(err)[:400]}")

    def ours(**kw):
        return lambda q, k, v: bsa.block_sparse_attention(q, k, v, attrs, attrs, **kw, **KERNEL_KW)

    add("block_sparse (exact pad rule)", ours(), e_all)
    add("block_sparse skip_pad_queries", ours(skip_pad_queries=True), e_real)
    for label, kw in hopper_variants():
        add(f"block_sparse skip_pad, {label}", ours(skip_pad_queries=True, **kw), e_real)
    tuned = {}
    if BEST:
        fwd = BEST.get("fwd", bsa.KernelConfig(64, 64, 4, 4))
        tuned = dict(
            block_q=fwd.block_q,
            block_k=fwd.block_k,
            num_warps=fwd.num_warps,
            num_stages=fwd.num_stages,
            dkv=BEST.get("dkv"),
            dq=BEST.get("dq"),
        )
        RESULTS["tuned"] = str(tuned)
        add("block_sparse tuned (exact pad rule)", ours(**tuned), e_all)
        add("block_sparse tuned skip_pad_queries", ours(**tuned, skip_pad_queries=True), e_real)
    add(
        "cudnn no mask",
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"),
        tokens * tokens,
    )
    add(
        "cudnn token-causal",
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"),
        tokens * (tokens + 1) // 2,
    )
    if jax.default_backend() == "gpu":
        add_mosaic_rows(add, tokens)
    add(
        "xla (chunked 2048, rule mask)",
        lambda q, k, v: xla_attention(q, k, v, attrs, attrs, 2048),
        e_all,
        iters=3,
    )

    # Other partitions with the tuned kernels and skipped pad queries: two long clips (many
    # partial tiles from the <|diffusion|>/TIME rows) and stage 1 (one clip per frame).
    for label, clip_ids in (
        (
            f"2 clips of {num_frames // 2}",
            layout.clip_ids_from_partition([num_frames // 2, num_frames - num_frames // 2]),
        ),
        ("stage 1 (1 frame/clip)", np.arange(num_frames)),
    ):
        other, _ = layout.training_layout(jnp.asarray(clip_ids, jnp.int32)[None], PATCHES)
        entries = visible_pairs(other, real_queries_only=True)
        c = np.asarray(classes(other, other, 64, 64, skip_pad_queries=True))
        log(
            f"  {label}: visible (real queries) {entries / tokens**2:.4f}; 64x64 tiles non-empty"
            f" {np.mean(c != 0):.4f}, partial {np.mean(c == 1):.4f}"
        )
        add(
            f"block_sparse skip_pad, {label}",
            lambda q, k, v, other=other: bsa.block_sparse_attention(
                q, k, v, other, other, skip_pad_queries=True, **tuned, **KERNEL_KW
            ),
            entries,
        )
    RESULTS["timings"] = rows

    print()
    print(
        f"| kernel ({tokens} tokens, {HEADS}x{HEAD_DIM}, bf16) | fwd ms | fwd+bwd ms |"
        " TFLOP/s fwd | TFLOP/s fwd+bwd |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, t_f, t_fb, entries in rows:
        fb = f"{t_fb:.2f}" if t_fb else "-"
        tf_fb = f"{3.5 * unit * entries / t_fb / 1e9:.0f}" if t_fb else "-"
        print(f"| {name} | {t_f:.2f} | {fb} | {unit * entries / t_f / 1e9:.0f} | {tf_fb} |")
    print(flush=True)


def add_mosaic_rows(add, tokens: int) -> None:
    """JAX's Hopper flash-attention example (Pallas' Mosaic GPU backend: warpgroup MMA and TMA),
    without a mask and token-causal (forward only: its backward has no mask), at ``tokens`` rounded
    up to its tiles: what a Mosaic GPU kernel reaches per visible entry at these shapes."""
    from jax.experimental.pallas.ops.gpu import attention_mgpu

    padded = round_up(tokens, 256)
    inputs = random_inputs(padded, seed=3, dtype=jnp.float16)  # the example's kernels are fp16
    blocks = dict(block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64)
    for causal in (False, True):
        config = attention_mgpu.TuningConfig(
            block_q=64, block_kv=128, max_concurrent_steps=2, causal=causal, **({} if causal else blocks)
        )
        entries = padded * (padded + 1) // 2 if causal else padded * padded
        add(
            f"mosaic gpu {'token-causal' if causal else 'no mask'} ({padded} tokens)",
            functools.partial(attention_mgpu.attention, config=config),
            entries,
            backward=not causal,
            inputs=inputs,
        )


def time_long(num_frames: int) -> None:
    """Stage-4-like length (80 frames: 35,520 tokens): ours (default tiles, pad queries skipped)
    and its XLA-side schedule cost, against cuDNN without a mask."""
    attrs = training_attrs(num_frames, seed=4)
    tokens = attrs.kind.shape[-1]
    q, k, v, ct = random_inputs(tokens, seed=5)
    entries = visible_pairs(attrs, real_queries_only=True)
    unit = 4.0 * HEAD_DIM * HEADS
    log(f"long: {tokens} tokens, visible (real queries) {entries / tokens**2:.4f}")

    def schedule_only(attrs):
        tp = -(-tokens // 64) * 64
        qt = bsa._prepare_tokens(attrs, 1, tp, pad_is_void=True)
        kt = bsa._prepare_tokens(attrs, 1, tp, pad_is_void=False)
        kc = bsa.KernelConfig(64, 64, 4, 3)
        return bsa._schedules(qt, kt, kc, kc, kc)

    ms = bench(jax.jit(schedule_only), attrs, iters=20)
    log(f"  schedule at {tokens} tokens: {ms:.3f} ms")
    RESULTS["long_schedule_ms"] = ms
    hopper = [
        (
            f"block_sparse skip_pad, {label}",
            lambda q, k, v, kw=kw: bsa.block_sparse_attention(
                q, k, v, attrs, attrs, skip_pad_queries=True, **kw
            ),
            entries,
        )
        for label, kw in hopper_variants(forwards=1)
    ]
    for name, attn, e in (
        (
            "block_sparse skip_pad",
            lambda q, k, v: bsa.block_sparse_attention(
                q, k, v, attrs, attrs, skip_pad_queries=True, **KERNEL_KW
            ),
            entries,
        ),
        *hopper,
        (
            "cudnn no mask",
            lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"),
            tokens**2,
        ),
    ):
        try:
            fwd, fwd_bwd = fwd_and_grad(attn)
            t_f = bench(fwd, q, k, v, iters=5)
            t_fb = bench(fwd_bwd, q, k, v, ct, iters=5)
            log(
                f"  {name:24s} fwd {t_f:7.2f} ms ({unit * e / t_f / 1e9:4.0f} TFLOP/s) |"
                f" fwd+bwd {t_fb:7.2f} ms ({3.5 * unit * e / t_fb / 1e9:4.0f} TFLOP/s)"
            )
            RESULTS.setdefault("long", []).append((name, t_f, t_fb, e))
        except Exception as err:
            log(f"  {name}: FAILED {type(err).__name__}: {str(err)[:300]}")


def time_in_layer_loop(num_frames: int, layers: int = 20) -> None:
    """The forward kernels as a model runs them: ``layers`` calls in a ``lax.scan``, each call's
    queries the previous call's output (small values, like a model's), against the same calls on
    N(0, 1) inputs; ms per call."""
    attrs = training_attrs(num_frames, seed=2)
    tokens = attrs.kind.shape[-1]
    q, k, v, _ = random_inputs(tokens, seed=3)
    entries = visible_pairs(attrs, real_queries_only=True)
    # The bench's partition (train/flops.official_partition), whose tiles differ from seed 2's.
    sizes = official_partition(num_frames, 0)
    bench_clip_ids = jnp.repeat(jnp.arange(len(sizes), dtype=jnp.int32), jnp.asarray(sizes))
    bench_attrs = layout.training_layout(bench_clip_ids[None], PATCHES)[0]
    bench_entries = visible_pairs(bench_attrs, real_queries_only=True)
    unit = 4.0 * HEAD_DIM * HEADS
    weight = jax.random.normal(jax.random.key(9), (8192, 8192), jnp.bfloat16)

    def matmul(w):
        return (w @ w.T * 1e-4).astype(w.dtype)

    @jax.jit
    def matmuls_only(q, k, v):
        return jax.lax.scan(lambda w, _: (matmul(w), None), weight, None, length=layers)[0]

    matmul_ms = bench(matmuls_only, q, k, v, iters=5) / layers
    variants = [("triton", KERNEL_KW)]
    if jax.default_backend() == "gpu":
        variants += [(f"hopper {bk}x{st}", hopper_kwargs(bk, st)) for bk, st in HOPPER_CONFIGS[:2]]
    for name, kw in variants:

        def attn(q, k, v, rule_attrs=attrs, kw=kw):
            return bsa.block_sparse_attention(q, k, v, rule_attrs, rule_attrs, skip_pad_queries=True, **kw)

        @jax.jit
        def chained(q, k, v, attn=attn):
            return jax.lax.scan(lambda x, _: (attn(x, k, v), None), q, None, length=layers)[0]

        @jax.jit
        def traced_attrs(q, k, v, attrs, attn=attn):  # the schedule computed at run time, as in a model
            return jax.lax.scan(lambda x, _: (attn(x, k, v, attrs), None), q, None, length=layers)[0]

        @jax.jit
        def independent(q, k, v, attn=attn):  # every call on the same N(0, 1) queries
            return jax.lax.scan(
                lambda x, i: (x + attn(q + i.astype(q.dtype), k, v), None), q, jnp.arange(layers)
            )[0]

        @jax.jit
        def between_matmuls(q, k, v, attn=attn):  # a hot GPU: each call after a 1.1 TFLOP matmul
            def body(carry, _):
                x, w = carry
                w = matmul(w)
                return (attn(x + w[0, 0].astype(x.dtype) * 0, k, v), w), None

            return jax.lax.scan(body, (q, weight), None, length=layers)[0]

        runs = (
            ("traced attrs", functools.partial(traced_attrs, attrs=attrs), entries),
            ("bench part.", functools.partial(traced_attrs, attrs=bench_attrs), bench_entries),
            ("chained", chained, entries),
            ("independent", independent, entries),
            ("hot", between_matmuls, entries),
        )
        for label, fn, visible_entries in runs:
            try:
                ms = bench(fn, q, k, v, iters=5) / layers - (matmul_ms if label == "hot" else 0.0)
                log(
                    f"  in a {layers}-call loop, {name:12s} {label:11s}: {ms:6.2f} ms a call"
                    f" ({unit * visible_entries / ms / 1e9:4.0f} TFLOP/s)"
                )
                RESULTS.setdefault("layer_loop", []).append((name, label, ms))
            except Exception as err:
                log(f"  loop {name} {label}: FAILED {type(err).__name__}: {str(err)[:300]}")


# ----------------------------------------------------------------------------------------------
# 3. per-kernel sweep
# ----------------------------------------------------------------------------------------------

# (block_q, block_k, num_warps, num_stages); dK/dV: block_k is the program's block, block_q the loop's.
FWD_CONFIGS = [(64, 64, 4, 3), (128, 64, 8, 3)]
DKV_CONFIGS = [(64, 64, 4, 3), (64, 32, 4, 3)]
DQ_CONFIGS = [(64, 64, 4, 3), (64, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3)]
BEST: dict = {}  # kernel -> fastest KernelConfig of the sweep


def sweep(num_frames: int, deadline_s: float) -> None:
    """Per-kernel timings; schedules are jit arguments so one compiled kernel serves several."""
    attrs = training_attrs(num_frames, seed=2)
    tokens = attrs.kind.shape[-1]
    padded = -(-tokens // 128) * 128
    q, k, v, do = (
        jnp.pad(x, ((0, 0), (0, padded - tokens), (0, 0), (0, 0))) for x in random_inputs(tokens, 3)
    )
    e_all = visible_pairs(attrs)
    unit = 4.0 * HEAD_DIM * HEADS
    scale = HEAD_DIM**-0.5
    qt = bsa._prepare_tokens(attrs, 1, padded, pad_is_void=False)
    kt = bsa._prepare_tokens(attrs, 1, padded, pad_is_void=False)

    classes_fn = jax.jit(bsa._tile_classes_padded, static_argnums=(2, 3))
    compact_fn = jax.jit(bsa._compact)
    t_cls = bench(classes_fn, qt, kt, 64, 64, iters=20)
    c64 = classes_fn(qt, kt, 64, 64)
    t_cmp = bench(compact_fn, c64, iters=20)
    log(
        f"  schedule at 64x64 tiles ({c64.shape[1]}x{c64.shape[2]}): classes {t_cls:.3f} ms,"
        f" compaction {t_cmp:.3f} ms"
    )
    RESULTS["schedule_parts_ms"] = [t_cls, t_cmp]

    def schedule(bq, bk, transpose=False):
        c = classes_fn(qt, kt, bq, bk)
        return compact_fn(jnp.swapaxes(c, 1, 2) if transpose else c)

    def dense_schedule(n_outer, n_inner):  # every tile full: the kernels' raw speed on L x L
        ids = jnp.broadcast_to(jnp.arange(n_inner, dtype=jnp.int32), (1, n_outer, n_inner))
        heads = jnp.broadcast_to(jnp.array([0, n_inner], jnp.int32), (1, n_outer, 2))
        return bsa._Schedule(jnp.concatenate([heads, ids], -1), jnp.arange(n_outer, dtype=jnp.int32)[None])

    base = bsa.KernelConfig(64, 64, 4, 3)
    out_ref, lse = jax.jit(lambda *a: bsa._forward_call(*a, schedule(64, 64), base, scale, INTERPRET))(
        q, k, v, qt, kt
    )
    delta = jnp.einsum("bthd,bthd->bht", do.astype(jnp.float32), out_ref.astype(jnp.float32))

    def make(kind, kc):
        if kind == "fwd":
            return jax.jit(lambda s: bsa._forward_call(q, k, v, qt, kt, s, kc, scale, INTERPRET)[0])
        call = bsa._dkv_call if kind == "dkv" else bsa._dq_call
        pick = (lambda r: r[0]) if kind == "dkv" else (lambda r: r)
        return jax.jit(lambda s: pick(call(q, k, v, do, lse, delta, qt, kt, s, kc, scale, INTERPRET)))

    results = {"fwd": [], "dkv": [], "dq": []}
    compiled = {}
    refs = {}
    for kind, configs in (("fwd", FWD_CONFIGS), ("dkv", DKV_CONFIGS), ("dq", DQ_CONFIGS)):
        for cfg in configs:
            if time.perf_counter() - START > deadline_s:
                log("  sweep: out of time, skipping the rest")
                break
            kc = bsa.KernelConfig(*cfg)
            try:
                sched = schedule(kc.block_q, kc.block_k, transpose=kind == "dkv")
                fn = make(kind, kc)
                out = fn(sched)[:, :tokens]  # rows past the sequence are void: unspecified
                err = rel_err(out, refs[kind]) if kind in refs else 0.0
                refs.setdefault(kind, out)
                ms = bench(fn, sched)
                compiled[(kind, cfg)] = fn
                flops = unit * e_all * (1.0 if kind == "fwd" else 1.25)  # bwd = 2.5x fwd, split in two
                results[kind].append((cfg, ms, err))
                log(
                    f"  {kind:3s} {cfg}: {ms:7.2f} ms ({flops / ms / 1e9:4.0f} TFLOP/s nominal),"
                    f" diff vs first {err:.1e}"
                )
            except Exception as err:
                log(f"  {kind} {cfg}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:300]}")
    RESULTS["sweep"] = results
    for kind, rows in results.items():
        good = [(ms, cfg) for cfg, ms, err in rows if err < 1e-2]
        if good:
            BEST[kind] = bsa.KernelConfig(*min(good)[1])
    log(f"  best: {BEST}")

    # Raw kernel speed: the best configs on a schedule with every tile full (no skipping, no
    # mask), against cuDNN without a mask and JAX's own Pallas Triton flash attention.
    dense_unit = unit * padded * padded
    for kind, kc in BEST.items():
        try:
            fn = compiled[(kind, dataclasses.astuple(kc))]
            if kind == "dkv":
                sched = dense_schedule(padded // kc.block_k, padded // kc.block_q)
            else:
                sched = dense_schedule(padded // kc.block_q, padded // kc.block_k)
            ms = bench(fn, sched, iters=5)
            flops = dense_unit * (1.0 if kind == "fwd" else 1.25)
            log(
                f"  dense (all tiles full) {kind:3s} {dataclasses.astuple(kc)}: {ms:7.2f} ms"
                f" ({flops / ms / 1e9:4.0f} TFLOP/s)"
            )
            RESULTS.setdefault("dense", {})[kind] = ms
        except Exception as err:
            log(f"  dense {kind}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:300]}")
    try:
        from jax.experimental.pallas.ops.gpu import attention as pallas_attention

        for bq, bk, warps, stages in ((64, 64, 4, 4), (128, 64, 8, 3)):
            sizes = pallas_attention.BlockSizes(block_q=bq, block_k=bk)
            fn = jax.jit(
                lambda q, k, v, sizes=sizes, w=warps, st=stages: pallas_attention.mha(
                    q, k, v, None, sm_scale=scale, block_sizes=sizes, num_warps=w, num_stages=st
                )
            )
            ms = bench(fn, q, k, v, iters=5)
            log(
                f"  jax pallas mha fwd, no mask ({bq}, {bk}, {warps}, {stages}): {ms:7.2f} ms"
                f" ({dense_unit / ms / 1e9:4.0f} TFLOP/s)"
            )
    except Exception as err:
        log(f"  jax pallas mha: FAILED {type(err).__name__}: {str(err).splitlines()[0][:300]}")


# ----------------------------------------------------------------------------------------------
# 4. the sampler's clip attention
# ----------------------------------------------------------------------------------------------


def stacked_rows(rows: list[TokenAttrs]) -> TokenAttrs:
    """Attribute sequences of one length (T,) each -> one (len(rows), T) TokenAttrs."""
    return TokenAttrs(*(jnp.stack([getattr(r, f) for r in rows]) for f in TokenAttrs._fields))


def sampling_rows(history_frames: int, clip_frames: int, grouped: bool) -> tuple[TokenAttrs, TokenAttrs]:
    """Query and key attributes of the sampler's two CFG rows (conditional, history-free), (2, T).

    ``grouped``: the clip in grouped order and its keys before the history's (clip_attention's
    layout); else block order with the history first (how the model fed the block-sparse kernel
    before the grouped order).
    """
    history, _ = layout.history_layout(history_frames, PATCHES)
    order = layout.grouped_clip_order(clip_frames, PATCHES + 2)
    queries, keys = [], []
    for first_frame, history_pad in ((history_frames, False), (0, True)):
        clip, _ = layout.generation_layout(first_frame, clip_frames, PATCHES)
        if grouped:
            clip = TokenAttrs(*(a[order] for a in clip))
        hist = history._replace(is_pad=jnp.full_like(history.is_pad, history_pad))
        queries.append(clip)
        keys.append(concat_attrs(clip, hist) if grouped else concat_attrs(hist, clip))
    return stacked_rows(queries), stacked_rows(keys)


def check_clip_attention(history_frames: int, clip_frames: int, head_dim: int) -> bool:
    """clip_attention (cuDNN for the patches) against an fp32 reference, and its time against the
    block-sparse kernel on the same rows, at the release sampler's sizes."""
    q_attrs, k_attrs = sampling_rows(history_frames, clip_frames, grouped=True)
    tq, tk = q_attrs.kind.shape[-1], k_attrs.kind.shape[-1]
    keys = jax.random.split(jax.random.key(5), 3)
    q = jax.random.normal(keys[0], (2, tq, HEADS, head_dim), jnp.float32).astype(jnp.bfloat16)
    k, v = (
        jax.random.normal(key, (2, tk, HEADS, head_dim), jnp.float32).astype(jnp.bfloat16) for key in keys[1:]
    )
    log(f"clip attention: {history_frames}+{clip_frames} frames, {tq} queries x {tk} keys, 2 rows, "
        f"{HEADS} heads x {head_dim}, bf16")  # fmt: skip
    # The rows' own keys, then one history that both rows share (the free row sees none of it).
    k, v = (jnp.concatenate([x[:, :tq], jnp.tile(x[:1, tq:], (2, 1, 1, 1))], axis=1) for x in (k, v))
    clip_keys, history_attrs = (
        TokenAttrs(*(a[..., s] for a in k_attrs)) for s in (slice(tq), slice(tq, None))
    )
    ours = jax.jit(lambda q, k, v: clip_attention(
        q, k[:, :tq], v[:, :tq], q_attrs, clip_keys, KVPrefix(k[:1, tq:], v[:1, tq:]), history_attrs,
        special_queries=2 * clip_frames))  # fmt: skip
    reference = jax.jit(lambda q, k, v: xla_attention(q, k, v, q_attrs, k_attrs, query_chunk=1024))
    with jax.default_matmul_precision("highest"):
        want = reference(*(x.astype(jnp.float32) for x in (q, k, v)))
    ours_err, xla_err = rel_err(ours(q, k, v), want), rel_err(reference(q, k, v), want)
    passed = bool(np.isfinite(ours_err)) and ours_err <= 2.0 * xla_err + 2e-3
    verdict = "OK" if passed else "FAIL"
    log(f"  clip_attention out: rel err {ours_err:.2e} (xla bf16 {xla_err:.2e})  {verdict}")

    # The block-sparse kernel on the block-order rows (the same pairs, its layout; its head dim in
    # power-of-two column blocks, as in the model).
    bq, bk = sampling_rows(history_frames, clip_frames, grouped=False)
    sparse = jax.jit(
        lambda q, k, v: bsa.block_sparse_attention(q, k, v, bq, bk, skip_pad_queries=True, **KERNEL_KW)
    )
    # What the model ran before the split: each step joins the rows' keys with the tiled history.
    joined = jax.jit(lambda q, k, v: clip_attention(
        q, *(jnp.concatenate([x[:, :tq], jnp.tile(x[:1, tq:], (2, 1, 1, 1))], axis=1) for x in (k, v)),
        q_attrs, k_attrs, special_queries=2 * clip_frames))  # fmt: skip
    joined_err = rel_err(joined(q, k, v), want)
    log(f"  joined keys out: rel err {joined_err:.2e}")
    times = {
        "clip_attention": bench(ours, q, k, v),
        "joined keys": bench(joined, q, k, v),
        "block_sparse": bench(sparse, q, k, v),
    }
    for name, ms in times.items():
        log(f"  {name:16s} {ms:7.2f} ms")
    RESULTS["clip_attention"] = {"rel_err": [ours_err, xla_err, passed], "ms": times}
    return passed


def main() -> None:
    global HEADS, HEAD_DIM, PATCHES, INTERPRET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="frames for timings (tokens = 2·frames·222)")
    parser.add_argument("--check-frames", type=int, default=9, help="frames for the correctness check")
    parser.add_argument("--long-frames", type=int, default=80, help="frames of the long timing (0: skip)")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-check", action="store_true", help="skip the correctness check")
    parser.add_argument(
        "--deadline", type=float, default=270.0, help="stop the sweep after this many seconds"
    )
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM, help="96: the 3.76 B model's")
    parser.add_argument("--patches", type=int, default=PATCHES, help="patch tokens per frame")
    parser.add_argument(
        "--interpret", action="store_true", help="Pallas interpreter (CPU dry run, tiny sizes)"
    )
    parser.add_argument(
        "--clip",
        default="56,24,96",
        help="history frames, clip frames, head dim of the clip check ('': skip it)",
    )
    parser.add_argument("--only-clip", action="store_true", help="run only the clip-attention check")
    parser.add_argument("--layer-loop", action="store_true", help="time the forwards in a 20-call scan")
    parser.add_argument("--no-timings", action="store_true", help="skip the timings at --frames")
    args = parser.parse_args()
    HEADS, HEAD_DIM, PATCHES, INTERPRET = args.heads, args.head_dim, args.patches, args.interpret
    if args.interpret:
        KERNEL_KW["interpret"] = True
    log(f"jax {jax.__version__}, devices {jax.devices()}")
    if args.clip:
        try:
            ok = check_clip_attention(*(int(x) for x in args.clip.split(",")))
            log("clip attention:", "PASS" if ok else "FAIL")
        except Exception:
            traceback.print_exc()
    if args.only_clip:
        args.no_check, args.no_sweep, args.long_frames = True, True, 0
    if not args.no_check:
        ok = False
        try:
            ok = check_correctness(args.check_frames)
        except Exception:
            traceback.print_exc()
        log("correctness:", "PASS" if ok else "FAIL")
    if not args.only_clip and not args.no_timings:
        try:
            time_kernels(args.frames)
        except Exception:
            traceback.print_exc()
    if args.layer_loop:
        try:
            time_in_layer_loop(args.frames)
        except Exception:
            traceback.print_exc()
    if args.long_frames:
        try:
            time_long(args.long_frames)
        except Exception:
            traceback.print_exc()
    if not args.no_sweep:
        try:
            sweep(args.frames, args.deadline)
        except Exception:
            traceback.print_exc()
    out_dir = os.environ.get("OUT")
    if out_dir:
        with open(os.path.join(out_dir, "block_sparse_check.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)


if __name__ == "__main__":
    main()
