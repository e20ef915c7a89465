"""Attention with Video-GPT's block-causal visibility rule evaluated from token attributes.

The mask is data, never a stored (L, L) matrix: every token carries ``TokenAttrs`` and
:func:`vgpt_jax.nn.tokens.visible` decides, for any (query, key) pair, whether the query may look
at the key (spec §5.1). Backends evaluate that rule inside the attention computation; ``xla`` is
the reference that every other backend is tested against.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from vgpt_jax.nn.fp8 import projection, stored_scale
from vgpt_jax.nn.initializers import phi3_normal
from vgpt_jax.nn.lora import LoRA, adapter_params, low_rank_update
from vgpt_jax.nn.remat import ATTENTION_OUT, ATTENTION_QKV
from vgpt_jax.nn.rope import apply_rope
from vgpt_jax.nn.tokens import TokenAttrs, batched_attrs, concat_attrs, pad_tokens, round_up, visible


class KVPrefix(NamedTuple):
    """Keys/values of tokens computed earlier (the clean history), for one layer.

    k, v: (B, Tp, H, Dh) after RoPE. A prefix of batch B serves queries of any multiple of B
    (the CFG rows reuse one history); in a grouped clip (:func:`clip_attention`) the query rows
    from B on must see none of it (the history-free CFG rows).
    """

    k: jax.Array
    v: jax.Array


def softmax_attention(q, k, v, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact softmax attention and its log-sum-exp.

    q (B, Tq, H, Dh), k/v (B, Tk, H, Dh), mask (B, Tq, Tk) bool -> out (B, Tq, H, Dh) in v's
    dtype, lse (B, Tq, H) fp32 (natural log of the masked rows' sums of exp(scaled scores)).
    """
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    lowest = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask[:, None], scores, lowest)
    peak = jnp.max(scores, axis=-1, keepdims=True, initial=lowest)  # (no keys: a prefill of nothing)
    weights = jnp.exp(scores - peak)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bhqk,bkhd->bqhd", (weights / total).astype(v.dtype), v)
    return out, jnp.moveaxis((peak + jnp.log(total))[..., 0], 1, 2)


def _masked_softmax_attention(q, k, v, q_attrs: TokenAttrs, k_attrs: TokenAttrs) -> jax.Array:
    """Dense attention of a query chunk. q (B, Tq, H, Dh), k/v (B, Tk, H, Dh) -> (B, Tq, H, Dh)."""
    return softmax_attention(q, k, v, visible(q_attrs, k_attrs))[0]


def xla_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, q_attrs: TokenAttrs, k_attrs: TokenAttrs, query_chunk: int
) -> jax.Array:
    """Reference backend: exact softmax attention under the rule, ``query_chunk`` queries at a time.

    Chunking bounds the score memory to (B, H, query_chunk, Tk); each chunk is rematerialised in
    the backward pass, so long sequences fit without a dense (L, L) mask.
    q (B, Tq, H, Dh), k/v (B, Tk, H, Dh) -> (B, Tq, H, Dh).
    """
    tq = q.shape[1]
    if tq <= query_chunk:
        return _masked_softmax_attention(q, k, v, q_attrs, k_attrs)
    padded = round_up(tq, query_chunk)
    n_chunks = padded // query_chunk

    def split(x, fill):  # (B, Tq, ...) -> (n_chunks, B, chunk, ...), padded with ``fill``
        x = pad_tokens(x, padded, fill).reshape(x.shape[0], n_chunks, query_chunk, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    # Padded queries are pad tokens, so their rows stay finite; they are dropped below.
    chunked_attrs = TokenAttrs(*(split(a, a.dtype == jnp.bool_) for a in q_attrs))
    chunk_fn = jax.checkpoint(lambda args: _masked_softmax_attention(args[0], k, v, args[1], k_attrs))
    out = jax.lax.map(chunk_fn, (split(q, 0), chunked_attrs))
    out = jnp.moveaxis(out, 0, 1).reshape(q.shape[0], padded, *q.shape[2:])
    return out[:, :tq]


def dense_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, k_attrs: TokenAttrs
) -> tuple[jax.Array, jax.Array]:
    """Every query sees every real key; pad keys must come after a row's real keys.

    The fused dense kernel of the platform: cuDNN flash attention on a GPU (any head dim up to 128,
    unpadded; it skips the pad keys' tiles), XLA elsewhere. q (B, Tq, H, Dh), k/v (B, Tk, H, Dh)
    in bf16 or fp16 on a GPU -> out (B, Tq, H, Dh), lse (B, Tq, H) fp32 (as softmax_attention).
    """
    is_pad = batched_attrs(k_attrs, k.shape[0]).is_pad
    if jax.default_backend() not in ("gpu", "cuda"):
        return softmax_attention(
            q, k, v, jnp.broadcast_to(~is_pad[:, None, :], (q.shape[0], q.shape[1], k.shape[1]))
        )
    # The internal entry point: the public jax.nn.dot_product_attention casts the log-sum-exp
    # to the output's bf16, too coarse to merge two partial attentions with.
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    real_keys = jnp.sum(~is_pad, axis=-1, dtype=jnp.int32)
    out, lse = cudnn.dot_product_attention(
        q,
        k,
        v,
        q_seqlen=jnp.full((q.shape[0],), q.shape[1], jnp.int32),
        kv_seqlen=real_keys,
        scale=q.shape[-1] ** -0.5,
        mask_type=cudnn.MaskType.PADDING,
        return_residual=True,
    )
    return out, jnp.swapaxes(lse, 1, 2).astype(jnp.float32)  # cuDNN's is (B, H, Tq)


def merge_attention(first: tuple[jax.Array, jax.Array], second: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Attention over two disjoint key sets from each one's (out (B, T, H, Dh), lse (B, T, H)).

    A row whose second lse is -inf (it saw none of those keys) keeps its first output.
    """
    (out1, lse1), (out2, lse2) = first, second
    peak = jnp.maximum(lse1, lse2)
    w1, w2 = jnp.exp(lse1 - peak)[..., None], jnp.exp(lse2 - peak)[..., None]
    out2 = jnp.where(jnp.isfinite(lse2)[..., None], out2.astype(jnp.float32), 0.0)
    return ((out1.astype(jnp.float32) * w1 + out2 * w2) / (w1 + w2)).astype(out1.dtype)


def history_attention(
    q: jax.Array, q_attrs: TokenAttrs, history: KVPrefix, history_attrs: TokenAttrs
) -> tuple[jax.Array, jax.Array]:
    """Attention of every query of a clip against a cached history that its row sees whole.

    q (R, Tq, H, Dh), q_attrs fields (R, Tq) (for the sharding only); history k/v (Bp, Tp, H, Dh),
    Bp <= R; history_attrs fields (R, Tp), pad keys last. Row r < Bp reads history r (all of its
    real keys: earlier clips and a condition); rows from Bp on see none of it (the history-free CFG
    rows, whose history is all pad), so neither the history nor their queries are copied or
    computed.
    -> out (R, Tq, H, Dh), lse (R, Tq, H) fp32, -inf on a row that sees none of it.
    """
    rows, shared = q.shape[0], history.k.shape[0]
    q_attrs = TokenAttrs(*(a[:shared] for a in batched_attrs(q_attrs, rows)))
    attrs = TokenAttrs(*(a[:shared] for a in batched_attrs(history_attrs, rows)))
    real = jnp.sum(~attrs.is_pad, axis=-1, dtype=jnp.int32)
    # a row with no real history key still gets one for the kernel; its lse is set to -inf below
    attrs = attrs._replace(is_pad=attrs.is_pad & (jnp.arange(attrs.is_pad.shape[-1]) > 0))
    out, lse = per_shard(
        lambda q, k, v, qa, ka: dense_attention(q, k, v, ka),
        q[:shared],
        *history,
        q_attrs,
        attrs,
        with_lse=True,
    )
    lse = jnp.where((real > 0)[:, None, None], lse, -jnp.inf)
    free = rows - shared
    out = jnp.concatenate([out, jnp.zeros((free, *out.shape[1:]), out.dtype)])
    return out, jnp.concatenate([lse, jnp.full((free, *lse.shape[1:]), -jnp.inf, lse.dtype)])


def clip_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    history: KVPrefix | None = None,
    history_attrs: TokenAttrs | None = None,
    *,
    special_queries: int,
) -> jax.Array:
    """Attention of one noisy clip in grouped order, against its own keys and a cached history.

    The queries are the clip's tokens as ``[all <|diffusion|>][all TIME][all patches]``, the first
    ``special_queries`` being the markers; k/v are the clip's own (k_attrs, pad keys last). Under
    the rule a patch query sees every real key of the clip and every query sees every real key of
    the history (earlier clips and the condition), so the patches take the fused dense kernel and
    only the markers' rows (2 a frame) are masked, against the clip's keys only. The history
    (:func:`history_attention`, never joined to the clip's keys: that join was a copy of the whole
    cache per layer and step) is merged in by the log-sum-exps. The dense kernel also fills the
    marker rows, which are then overwritten: that keeps the query axis whole for sequence
    sharding. q (R, Tq, H, Dh), k/v (R, Tk, H, Dh) -> (R, Tq, H, Dh).
    """
    out, lse = per_shard(
        lambda q, k, v, qa, ka: dense_attention(q, k, v, ka), q, k, v, q_attrs, k_attrs, with_lse=True
    )
    markers = TokenAttrs(*(a[..., :special_queries] for a in batched_attrs(q_attrs, q.shape[0])))
    marker_out, marker_lse = softmax_attention(
        q[:, :special_queries], k, v, visible(markers, batched_attrs(k_attrs, k.shape[0]))
    )
    out = out.at[:, :special_queries].set(marker_out.astype(out.dtype))
    lse = lse.at[:, :special_queries].set(marker_lse)
    if history is None or history.k.shape[1] == 0:  # (sampling the first clip: no history yet)
        return out
    return merge_attention((out, lse), history_attention(q, q_attrs, history, history_attrs))


def per_shard(
    kernel, q, k, v, q_attrs: TokenAttrs, k_attrs: TokenAttrs, *, with_lse: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Runs an attention kernel on each device's shard of the current mesh (``jax.set_mesh``).

    A Pallas kernel is opaque to the SPMD partitioner, which would otherwise gather its inputs and
    run the whole batch on every device. Batch goes over (data, fsdp), heads over tensor, queries
    over sequence (keys and values are gathered along it); an axis that does not divide its
    dimension is left unsharded. Shapes as :func:`xla_attention`; ``with_lse``: the kernel also
    returns a log-sum-exp (B, Tq, H), sharded as the queries.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(q, k, v, q_attrs, k_attrs)

    def axes(names: tuple[str, ...], size: int):
        names = tuple(n for n in names if mesh.shape.get(n, 1) > 1)
        total = math.prod(mesh.shape[n] for n in names)
        return names if names and size % total == 0 else None

    batch, length = axes(("data", "fsdp"), q.shape[0]), axes(("sequence",), q.shape[1])
    heads = axes(("tensor",), q.shape[2])

    q_attrs, k_attrs = batched_attrs(q_attrs, q.shape[0]), batched_attrs(k_attrs, k.shape[0])
    spec = jax.sharding.PartitionSpec
    q_spec, kv_spec = spec(batch, length, heads, None), spec(batch, None, heads, None)
    sharded = jax.shard_map(
        kernel,
        mesh=mesh,
        in_specs=(
            q_spec,
            kv_spec,
            kv_spec,
            TokenAttrs(*[spec(batch, length)] * len(TokenAttrs._fields)),
            TokenAttrs(*[spec(batch, None)] * len(TokenAttrs._fields)),
        ),
        out_specs=(q_spec, spec(batch, length, heads)) if with_lse else q_spec,
        check_vma=False,
    )
    return sharded(q, k, v, q_attrs, k_attrs)


@dataclasses.dataclass(frozen=True)
class KernelTiles:
    """The Pallas backends' tiles, from ``config.model.attention`` (hashable: a Linen attribute).

    block_sparse: (block_q, block_k, num_warps, num_stages) of the forward, dK/dV and dQ kernels;
    splash: (block_q, block_kv); forward_kernel: the block-sparse forward, "triton", "hopper" or
    "auto" (hopper on a Hopper GPU); hopper: its (block_k, stages); dq_kernel, dkv_kernel: the dQ and
    dK/dV kernels, the same choices (their tiles: block_sparse's dq block_k, dkv block_q, and stages).
    """

    block_sparse: tuple[tuple[int, int, int, int], ...]
    splash: tuple[int, int]
    forward_kernel: str = "auto"
    hopper: tuple[int, int] = (128, 2)
    dq_kernel: str = "auto"
    dkv_kernel: str = "auto"


def resolve_backend(backend: str) -> str:
    """The backend ``auto`` stands for on this platform; any other name as it is."""
    if backend != "auto":
        return backend
    return {"gpu": "block_sparse", "cuda": "block_sparse", "tpu": "splash"}.get(jax.default_backend(), "xla")


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    *,
    backend: str,
    query_chunk: int,
    tiles: KernelTiles | None = None,
) -> jax.Array:
    """Attention under the visibility rule, by backend. Shapes as :func:`xla_attention`.

    - ``auto``: ``block_sparse`` on a GPU, ``splash`` on a TPU, ``xla`` elsewhere;
    - ``xla``: the reference, any device;
    - ``block_sparse``: GPU flash attention that skips fully masked tiles
      (``vgpt_jax.nn.block_sparse_attention``, Pallas/Triton). Pad queries are void there: no real
      token reads a pad token's output, in training or sampling, so their work is skipped;
    - ``splash``: TPU splash attention over the rule's two key ranges (``vgpt_jax.nn.splash``).

    ``tiles``: the Pallas kernels' tiles; None keeps the kernels' own defaults. On a CPU the Pallas
    backends run in the Pallas interpreter (exact, slow: tests only).
    """
    backend = resolve_backend(backend)
    interpret = jax.default_backend() == "cpu"
    if backend == "xla":
        return xla_attention(q, k, v, q_attrs, k_attrs, query_chunk)
    if backend == "splash":
        from vgpt_jax.nn.splash import splash_attention

        sizes = {} if tiles is None else dict(zip(("block_q", "block_kv"), tiles.splash, strict=True))
        kernel = functools.partial(splash_attention, interpret=interpret, **sizes)
        return per_shard(kernel, q, k, v, q_attrs, k_attrs)
    if backend == "block_sparse":
        from vgpt_jax.nn import block_sparse_hopper
        from vgpt_jax.nn.block_sparse_attention import KernelConfig, block_sparse_attention

        sizes = {}
        if tiles is not None:
            fwd, dkv, dq = (KernelConfig(*t) for t in tiles.block_sparse)
            sizes = dataclasses.asdict(fwd) | {"dkv": dkv, "dq": dq}
            if not interpret:  # the Hopper kernels have no interpreter

                def hopper(kernel: str) -> bool:
                    return block_sparse_hopper.chosen(kernel, q.dtype)

                if hopper(tiles.forward_kernel):
                    block_k, stages = tiles.hopper
                    sizes |= {"hopper_forward": True, "block_k": block_k, "num_stages": stages}
                sizes |= {"hopper_dq": hopper(tiles.dq_kernel), "hopper_dkv": hopper(tiles.dkv_kernel)}
        kernel = functools.partial(
            block_sparse_attention, skip_pad_queries=True, interpret=interpret, **sizes
        )
        return per_shard(kernel, q, k, v, q_attrs, k_attrs)
    raise ValueError(
        f"unknown attention backend {backend!r}; available: 'auto', 'xla', 'block_sparse', 'splash'"
    )


def _dense_clip_kernel(backend: str, dtype) -> bool:
    """Whether a grouped clip takes clip_attention under a resolved ``backend``: with
    ``block_sparse`` (a GPU, or a CPU in tests) and, on a GPU, in the half precisions that cuDNN's
    flash attention takes."""
    if backend != "block_sparse":
        return False
    return jax.default_backend() == "cpu" or jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)


class SelfAttention(nn.Module):
    """Phi-3 attention: fused QKV, RoPE on explicit positions, rule-masked softmax, output proj.

    x (B, T, D) -> (B, T, D), plus this call's keys/values (B, T, H, Dh) after RoPE.
    Parameters: ``qkv`` (D, 3, H, Dh) = Phi-3 ``qkv_proj.weight`` (3·H·Dh, D) transposed and
    reshaped in Q|K|V order; ``out`` (H, Dh, D) = ``o_proj.weight`` transposed and reshaped; with
    ``lora`` wrapping them, their adapters (:mod:`vgpt_jax.nn.lora`): ``qkv_lora_a`` (D, r),
    ``qkv_lora_b`` (r, 3, H, Dh), ``out_lora_a`` (H, Dh, r), ``out_lora_b`` (r, D).
    """

    num_heads: int
    backend: str = "xla"
    query_chunk: int = 2048
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    # set when x is one noisy clip in grouped order (VideoGPT.denoise): its first queries are the
    # markers, see clip_attention
    special_queries: int | None = None
    lora: LoRA = LoRA()
    tiles: KernelTiles | None = None  # the Pallas kernels' (None: their defaults)
    fp8: bool = False  # qkv and out as float8 matmuls (vgpt_jax.nn.fp8; sampling only)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        attrs: TokenAttrs,
        prefix: KVPrefix | None = None,
        prefix_attrs: TokenAttrs | None = None,
    ) -> tuple[jax.Array, KVPrefix]:
        d = x.shape[-1]
        head_dim = d // self.num_heads
        qkv_kernel = self.param(
            "qkv",
            nn.with_logical_partitioning(phi3_normal, ("embed", "qkv", "heads", "head_dim")),
            (d, 3, self.num_heads, head_dim),
            self.param_dtype,
        )
        out_kernel = self.param(
            "out",
            nn.with_logical_partitioning(phi3_normal, ("heads", "head_dim", "embed")),
            (self.num_heads, head_dim, d),
            self.param_dtype,
        )
        x = x.astype(self.dtype)
        # tokens leading, as x: the kernel's gradient then contracts (b, t) of both operands in
        # place, where a leading q/k/v axis needed a transpose of the whole gradient
        qkv = projection("btd,dshk->btshk", x, qkv_kernel, self.dtype, self.fp8, stored_scale(self, "qkv"))
        if self.lora.wraps("qkv"):
            a, b = self._adapter(
                "qkv", (d,), ("embed",), (3, self.num_heads, head_dim), ("qkv", "heads", "head_dim")
            )
            # in the base product's own layout, so that a zero B leaves its bits as they were
            qkv = qkv + low_rank_update("btd,dr->btr", "btr,rshk->btshk", x, a, b, self.lora.scale)
        qkv = nn.with_logical_constraint(
            qkv, ("activation_batch", "activation_length", None, "activation_heads", None)
        )
        q = checkpoint_name(apply_rope(qkv[:, :, 0], cos, sin), ATTENTION_QKV)
        k = checkpoint_name(apply_rope(qkv[:, :, 1], cos, sin), ATTENTION_QKV)
        v = checkpoint_name(qkv[:, :, 2], ATTENTION_QKV)
        this_kv = KVPrefix(k, v)
        backend = resolve_backend(self.backend)
        if self.special_queries is not None and _dense_clip_kernel(backend, self.dtype):
            out = clip_attention(
                q, k, v, attrs, attrs, prefix, prefix_attrs, special_queries=self.special_queries
            )
        else:
            keys, values, k_attrs = k, v, attrs
            if prefix is not None:  # this call's keys first, so a row's pad keys (history) come last
                reps = q.shape[0] // prefix.k.shape[0]
                keys, values = (
                    jnp.concatenate([x, jnp.tile(h, (reps, 1, 1, 1))], axis=1)
                    for x, h in zip((k, v), prefix, strict=True)
                )
                k_attrs = concat_attrs(attrs, prefix_attrs)
            out = attend(
                q, keys, values, attrs, k_attrs,
                backend=backend, query_chunk=self.query_chunk, tiles=self.tiles,
            )  # fmt: skip
        if backend != "block_sparse":
            # (the block-sparse VJP names its own output, padded to its kernel's tiles: naming
            # this slice of it too would save the output twice)
            out = checkpoint_name(out, ATTENTION_OUT)
        out = nn.with_logical_constraint(
            out, ("activation_batch", "activation_length", "activation_heads", None)
        )
        y = projection("bthk,hkd->btd", out, out_kernel, self.dtype, self.fp8, stored_scale(self, "out"))
        if self.lora.wraps("out"):
            a, b = self._adapter("out", (self.num_heads, head_dim), ("heads", "head_dim"), (d,), ("embed",))
            y = y + low_rank_update("bthk,hkr->btr", "btr,rd->btd", out, a, b, self.lora.scale)
        return y, this_kv

    def _adapter(self, name, in_shape, in_axes, out_shape, out_axes) -> tuple[jax.Array, jax.Array]:
        return adapter_params(
            self, name, in_shape, in_axes, out_shape, out_axes, self.lora.rank, self.param_dtype
        )
