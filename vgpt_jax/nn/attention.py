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


def _masked_softmax_attention(q, k, v, q_attrs: TokenAttrs, k_attrs: TokenAttrs) -> jax.Array:
    """Dense attention of a query chunk. q (B, Tq, H, Dh), k/v (B, Tk, H, Dh) -> (B, Tq, H, Dh)."""
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    mask = visible(q_attrs, k_attrs)[:, None]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


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


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, k_attrs: TokenAttrs) -> jax.Array:
    """Every query sees every real key; pad keys must come after a row's real keys.

    The fused dense kernel of the platform: cuDNN flash attention on a GPU (any head dim up to 128,
    unpadded; it skips the pad keys' tiles), XLA elsewhere. q (B, Tq, H, Dh), k/v (B, Tk, H, Dh)
    in bf16 or fp16 on a GPU -> (B, Tq, H, Dh).
    """
    real_keys = jnp.sum(~batched_attrs(k_attrs, k.shape[0]).is_pad, axis=-1, dtype=jnp.int32)
    implementation = "cudnn" if jax.default_backend() in ("gpu", "cuda") else "xla"
    return jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=real_keys, implementation=implementation
    )


def clip_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_attrs: TokenAttrs,
    k_attrs: TokenAttrs,
    *,
    special_queries: int,
    query_chunk: int,
) -> jax.Array:
    """Attention of one noisy clip in grouped order, against its own keys then a clean history.

    The queries are the clip's tokens as ``[all <|diffusion|>][all TIME][all patches]``, the first
    ``special_queries`` being the markers; the keys are the clip's tokens then the history's, pad
    keys last in each row (a history-free CFG row marks the whole history pad). Under the rule a
    patch query sees every real key, so patches take the fused dense kernel; only the markers'
    rows are masked (order-causal inside the clip), and they are few (2 a frame). The dense kernel
    also fills the marker rows, which are then overwritten: that keeps the query axis whole for
    sequence sharding. Shapes as :func:`xla_attention`.
    """
    out = per_shard(lambda q, k, v, qa, ka: dense_attention(q, k, v, ka), q, k, v, q_attrs, k_attrs)
    markers = TokenAttrs(*(a[..., :special_queries] for a in batched_attrs(q_attrs, q.shape[0])))
    marker_out = xla_attention(q[:, :special_queries], k, v, markers, k_attrs, query_chunk)
    return out.at[:, :special_queries].set(marker_out.astype(out.dtype))


def per_shard(kernel, q, k, v, q_attrs: TokenAttrs, k_attrs: TokenAttrs) -> jax.Array:
    """Runs an attention kernel on each device's shard of the current mesh (``jax.set_mesh``).

    A Pallas kernel is opaque to the SPMD partitioner, which would otherwise gather its inputs and
    run the whole batch on every device. Batch goes over (data, fsdp), heads over tensor, queries
    over sequence (keys and values are gathered along it); an axis that does not divide its
    dimension is left unsharded. Shapes as :func:`xla_attention`.
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
        out_specs=q_spec,
        check_vma=False,
    )
    return sharded(q, k, v, q_attrs, k_attrs)


@dataclasses.dataclass(frozen=True)
class KernelTiles:
    """The Pallas backends' tiles, from ``config.model.attention`` (hashable: a Linen attribute).

    block_sparse: (block_q, block_k, num_warps, num_stages) of the forward, dK/dV and dQ kernels;
    splash: (block_q, block_kv).
    """

    block_sparse: tuple[tuple[int, int, int, int], ...]
    splash: tuple[int, int]


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
        from vgpt_jax.nn.block_sparse_attention import KernelConfig, block_sparse_attention

        sizes = {}
        if tiles is not None:
            fwd, dkv, dq = (KernelConfig(*t) for t in tiles.block_sparse)
            sizes = dataclasses.asdict(fwd) | {"dkv": dkv, "dq": dq}
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


class KVPrefix(NamedTuple):
    """Keys/values of tokens computed earlier (the clean history), for one layer.

    k, v: (B, Tp, H, Dh) after RoPE. A prefix of batch B serves queries of any multiple of B
    (the CFG rows reuse one history).
    """

    k: jax.Array
    v: jax.Array


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
        qkv = projection("btd,dshk->sbthk", x, qkv_kernel, self.dtype, self.fp8, stored_scale(self, "qkv"))
        if self.lora.wraps("qkv"):
            a, b = self._adapter(
                "qkv", (d,), ("embed",), (3, self.num_heads, head_dim), ("qkv", "heads", "head_dim")
            )
            # in the base product's own layout, so that a zero B leaves its bits as they were
            qkv = qkv + low_rank_update("btd,dr->btr", "btr,rshk->sbthk", x, a, b, self.lora.scale)
        qkv = nn.with_logical_constraint(
            qkv, (None, "activation_batch", "activation_length", "activation_heads", None)
        )
        q = checkpoint_name(apply_rope(qkv[0], cos, sin), ATTENTION_QKV)
        k = checkpoint_name(apply_rope(qkv[1], cos, sin), ATTENTION_QKV)
        v = checkpoint_name(qkv[2], ATTENTION_QKV)
        this_kv = KVPrefix(k, v)
        keys, values, k_attrs = k, v, attrs
        if prefix is not None:  # this call's keys first, so a row's pad keys (history) come last
            reps = q.shape[0] // prefix.k.shape[0]
            keys, values = (
                jnp.concatenate([x, jnp.tile(h, (reps, 1, 1, 1))], axis=1)
                for x, h in zip((k, v), prefix, strict=True)
            )
            k_attrs = concat_attrs(attrs, prefix_attrs)
        backend = resolve_backend(self.backend)
        if self.special_queries is not None and _dense_clip_kernel(backend, self.dtype):
            out = clip_attention(
                q, keys, values, attrs, k_attrs,
                special_queries=self.special_queries, query_chunk=self.query_chunk,
            )  # fmt: skip
        else:
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
