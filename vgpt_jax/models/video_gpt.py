"""Video-GPT: a Phi-3 decoder stack used as a diffusion transformer over packed clip sequences.

The module works on latents in channels-last layout, (B, F, h, w, C). Its parameters map one to
one onto the official ``LVM`` state dict (spec §3, "Parameter names"); converters use this table
(``T`` = transpose, ``L`` = the stacked layer index of the scanned ``layers``):

=====================================================  ==============================================
ours (``params/...``)                                   official tensor -> ours
=====================================================  ==============================================
``embed_tokens/embedding`` (V, D)                        ``llm.embed_tokens.weight`` (V, D)
``backbone/layers/input_norm/scale`` [L] (D,)            ``llm.layers.L.input_layernorm.weight``
``backbone/layers/attention/qkv`` [L] (D, 3, H, Dh)      ``llm.layers.L.self_attn.qkv_proj.weight``
                                                         (3·H·Dh, D): T, reshape (D, 3, H, Dh)
``backbone/layers/attention/out`` [L] (H, Dh, D)         ``llm.layers.L.self_attn.o_proj.weight``
                                                         (D, H·Dh): T, reshape (H, Dh, D)
``backbone/layers/post_attention_norm/scale`` [L]        ``llm.layers.L.post_attention_layernorm.weight``
``backbone/layers/mlp/gate_up`` [L] (D, 2, F)            ``llm.layers.L.mlp.gate_up_proj.weight`` (2F, D):
                                                         T, reshape (D, 2, F) (gate first)
``backbone/layers/mlp/down`` [L] (F, D)                  ``llm.layers.L.mlp.down_proj.weight`` (D, F): T
``backbone/norm/scale`` (D,)                             ``llm.norm.weight``
``x_embedder/kernel`` (p, p, C, D), ``bias`` (D,)        ``x_embedder.proj.weight`` (D, C, p, p):
                                                         permute (2, 3, 1, 0); ``x_embedder.proj.bias``
``input_x_embedder/...``                                 ``input_x_embedder.proj.{weight,bias}``, same
``time_token/fc1/kernel`` (256, D), ``bias``             ``time_token.mlp.0.{weight: T, bias}``
``time_token/fc2/kernel`` (D, D), ``bias``               ``time_token.mlp.2.{weight: T, bias}``
``t_embedder/fc{1,2}/...``                               ``t_embedder.mlp.{0,2}.{weight: T, bias}``
``final_layer/modulation/kernel`` (D, 2D), ``bias``      ``final_layer.adaLN_modulation.1.{weight: T, bias}``
                                                         (output halves: shift, then scale)
``final_layer/linear/kernel`` (D, p·p·C), ``bias``       ``final_layer.linear.{weight: T, bias}``
(no parameter: recomputed)                               ``pos_embed`` (1, 192·192, D) buffer
=====================================================  ==============================================

With ``config.lora.rank`` r > 0, each attention kernel named in ``config.lora.targets`` gets its
adapter beside it (:mod:`vgpt_jax.nn.lora`): ``backbone/layers/attention/qkv_lora_a`` [L] (D, r),
``qkv_lora_b`` [L] (r, 3, H, Dh), ``out_lora_a`` [L] (H, Dh, r), ``out_lora_b`` [L] (r, D). They
have no official tensor: ``vgpt export`` merges them into ``qkv`` and ``out``.

With ``config.condition.kind`` "class", ``class_embed`` (num_classes + 1, D) holds one row per
class and a last, null row; it has no official tensor either (the release has no condition path,
DESIGN §8). A "text" condition reads the Phi-3 ``embed_tokens`` table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from vgpt_jax import config as config_lib
from vgpt_jax.models import layout
from vgpt_jax.nn.attention import KernelTiles, KVPrefix, SelfAttention
from vgpt_jax.nn.embeddings import (
    PatchEmbed,
    TimestepEmbedder,
    cropped_pos_embed,
    dense,
    sincos_2d_table,
    unpatchify,
)
from vgpt_jax.nn.fp8 import FP8_SCALE_SUFFIX, scaled_fp8
from vgpt_jax.nn.initializers import phi3_normal, zeros
from vgpt_jax.nn.lora import LoRA
from vgpt_jax.nn.mlp import GatedMLP
from vgpt_jax.nn.norms import RMSNorm, layer_norm_no_affine
from vgpt_jax.nn.remat import ATTENTION_LSE, ATTENTION_OUT, ATTENTION_RESIDUALS
from vgpt_jax.nn.rope import inverse_frequencies, rope_cos_sin
from vgpt_jax.nn.tokens import TokenAttrs, batched_attrs
from vgpt_jax.parallel import mesh as mesh_lib

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # Keeps what the attention kernel's backward reads (q, k, v, its output and softmax
    # statistics): the backward re-runs only the norms and the MLP/out-projection matmuls, never
    # the attention forward (its memory: README, "Performance").
    "attention": jax.checkpoint_policies.save_only_these_names(*ATTENTION_RESIDUALS),
    # Keeps the output and softmax statistics only: the backward re-runs the q/k/v projection and
    # RoPE (a sixth of a layer's matmuls) but still not the attention forward, for a fifth of
    # "attention"'s saved bytes (q, k and v are three activations of the output's size).
    "attention_out": jax.checkpoint_policies.save_only_these_names(ATTENTION_OUT, ATTENTION_LSE),
    # "attention"'s residuals moved to host memory in the forward and back for the backward: the
    # device keeps "full"'s footprint while the copies overlap the next layers' compute.
    "attention_offload": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=(),
        names_which_can_be_offloaded=ATTENTION_RESIDUALS,
        offload_src="device",
        offload_dst="pinned_host",
    ),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The hashable model hyper-parameters (a Linen attribute), built from ``config.model``."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    vocab_size: int
    rms_norm_eps: float
    final_norm_eps: float
    latent_channels: int
    patch_size: int
    pos_embed_max_size: int
    pos_embed_base_size: int
    time_embed_dim: int
    rope_theta: float
    rope_factors: tuple[float, ...] | None
    rope_scaling: float
    attention_backend: str
    query_chunk: int
    attention_tiles: KernelTiles
    remat_policy: str
    scan_layers: bool
    token_diffusion: int
    token_image_start: int
    token_image_end: int
    dtype: Any
    param_dtype: Any
    lora: LoRA = LoRA()
    condition_kind: str = "none"  # config.condition.kind
    num_classes: int = 0  # class conditions; the table has one more, null, row
    condition_length: int = 0  # P: condition tokens before the frames
    fp8_projections: bool = False  # config.model.fp8_projections
    scan_unroll: int = 1  # layers per iteration of the scan (config.train.scan_unroll when training)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> ModelConfig:
        m = config.model
        factors = {"long": tuple(m.rope.long_factor), "short": tuple(m.rope.short_factor), "none": None}
        return cls(
            hidden_size=m.hidden_size,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            mlp_dim=m.mlp_dim,
            vocab_size=m.vocab_size,
            rms_norm_eps=m.rms_norm_eps,
            final_norm_eps=m.final_norm_eps,
            latent_channels=m.latent_channels,
            patch_size=m.patch_size,
            pos_embed_max_size=m.pos_embed_max_size,
            pos_embed_base_size=m.pos_embed_base_size,
            time_embed_dim=m.time_embed_dim,
            rope_theta=m.rope.theta,
            rope_factors=factors[m.rope.factors],
            rope_scaling=config_lib.rope_attention_scaling(config),
            attention_backend=m.attention.backend,
            query_chunk=m.attention.query_chunk,
            attention_tiles=KernelTiles(
                block_sparse=tuple(
                    (k.block_q, k.block_k, k.num_warps, k.num_stages)
                    for k in (m.attention.block_sparse[name] for name in ("fwd", "dkv", "dq"))
                ),
                splash=(m.attention.splash.block_q, m.attention.splash.block_kv),
                forward_kernel=m.attention.block_sparse.forward_kernel,
                dq_kernel=m.attention.block_sparse.dq_kernel,
                dkv_kernel=m.attention.block_sparse.dkv_kernel,
                hopper=(m.attention.block_sparse.hopper.block_k, m.attention.block_sparse.hopper.stages),
            ),
            remat_policy=m.remat_policy,
            scan_layers=m.scan_layers,
            token_diffusion=m.tokens.diffusion,
            token_image_start=m.tokens.image_start,
            token_image_end=m.tokens.image_end,
            dtype=jnp.dtype(m.dtype),
            param_dtype=jnp.dtype(m.param_dtype),
            lora=LoRA(config.lora.rank, config.lora.alpha, tuple(config.lora.targets)),
            condition_kind=config.condition.kind,
            num_classes=config.condition.num_classes,
            condition_length=config_lib.condition_length(config),
            fp8_projections=m.fp8_projections,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """positions (B, T) -> the RoPE cos, sin (B, T, head_dim) fp32 of the model's settings."""
    inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_factors)
    return rope_cos_sin(positions, inv_freq, cfg.rope_scaling)


class DecoderLayer(nn.Module):
    """One Phi-3 layer: x + Attn(RMSNorm(x)); x + MLP(RMSNorm(x)). (B, T, D) -> (B, T, D).

    Scanned over layers: the carry is x; ``prefix`` holds this layer's cached history keys/values
    (scanned input) or is None; with ``return_kv`` the layer also emits its own keys/values.
    """

    cfg: ModelConfig
    return_kv: bool = False
    special_queries: int | None = None  # x is one noisy clip in grouped order (see denoise)

    @nn.compact
    def __call__(
        self, x, cos, sin, attrs: TokenAttrs, prefix_attrs: TokenAttrs | None, prefix: KVPrefix | None
    ):
        c = self.cfg
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
        h = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="input_norm")(x)
        h, kv = SelfAttention(
            c.num_heads,
            c.attention_backend,
            c.query_chunk,
            c.dtype,
            c.param_dtype,
            special_queries=self.special_queries,
            lora=c.lora,
            tiles=c.attention_tiles,
            fp8=c.fp8_projections,
            name="attention",
        )(h, cos, sin, attrs, prefix, prefix_attrs)
        x = x + h
        h = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="post_attention_norm")(x)
        x = x + GatedMLP(c.mlp_dim, c.dtype, c.param_dtype, c.fp8_projections, name="mlp")(h)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
        return x, (kv if self.return_kv else None)


class Backbone(nn.Module):
    """The decoder stack plus the final RMSNorm. x (B, T, D) -> (B, T, D), per-layer K/V or None.

    ``prefix`` is a KVPrefix whose arrays carry a leading layer axis (num_layers, B, Tp, H, Dh).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        x,
        positions,
        attrs: TokenAttrs,
        prefix: KVPrefix | None = None,
        prefix_attrs: TokenAttrs | None = None,
        return_kv: bool = False,
        special_queries: int | None = None,
    ):
        c = self.cfg
        cos, sin = rope_tables(c, positions)
        layer_cls = DecoderLayer
        # without a loop around the layers, XLA's CSE could merge a recomputation with the forward
        unrolled = not c.scan_layers or c.scan_unroll >= c.num_layers
        if c.remat_policy != "none":
            layer_cls = nn.remat(DecoderLayer, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=unrolled)
        x = x.astype(c.dtype)
        if c.scan_layers:
            stack = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=c.num_layers,
                unroll=c.scan_unroll,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(c, return_kv, special_queries, name="layers")
            x, kvs = stack(x, cos, sin, attrs, prefix_attrs, prefix)
        else:
            per_layer = []
            for i in range(c.num_layers):
                layer_prefix = None if prefix is None else jax.tree.map(lambda a, i=i: a[i], prefix)
                x, kv = layer_cls(c, return_kv, special_queries, name=f"layers_{i}")(
                    x, cos, sin, attrs, prefix_attrs, layer_prefix
                )
                per_layer.append(kv)
            kvs = jax.tree.map(lambda *a: jnp.stack(a), *per_layer) if return_kv else None
        x = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="norm")(x)
        return x, kvs


class FinalLayer(nn.Module):
    """LayerNorm (no affine, eps 1e-6) -> x·(1 + scale) + shift -> Linear to p·p·C.

    x (B, F, S, D), c (B, F, D) -> (B, F, S, p·p·C) fp32. Zero-initialised, as the official init.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        cfg = self.cfg
        d = cfg.hidden_size
        dt = (cfg.dtype, cfg.param_dtype)
        mod = dense("modulation", nn.silu(c), 2 * d, ("embed", "mlp"), zeros, *dt)
        shift, scale = mod[..., :d], mod[..., d:]
        h = layer_norm_no_affine(x, cfg.final_norm_eps)
        h = h * (1.0 + scale[..., None, :].astype(jnp.float32)) + shift[..., None, :].astype(jnp.float32)
        patch_dim = cfg.patch_size**2 * cfg.latent_channels
        out = dense("linear", h.astype(cfg.dtype), patch_dim, ("embed", "patch_out"), zeros, *dt)
        return out.astype(jnp.float32)


class VideoGPT(nn.Module):
    """Embedders, backbone and head of Video-GPT.

    ``__call__`` is the training pass over the packed ``[clean][noisy]`` sequence of
    :mod:`vgpt_jax.models.layout`; ``prefill`` and ``denoise`` are the two halves of the
    KV-cached sampler (clean history once, then noisy clips against its keys/values).
    """

    cfg: ModelConfig

    def setup(self):
        c = self.cfg
        dt = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        self.embed_tokens = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            embedding_init=nn.with_logical_partitioning(phi3_normal, ("vocab", "embed")),
            name="embed_tokens",
            **dt,
        )
        self.x_embedder = PatchEmbed(c.hidden_size, c.patch_size, zero_init=True, **dt)
        self.input_x_embedder = PatchEmbed(c.hidden_size, c.patch_size, **dt)
        self.time_token = TimestepEmbedder(c.hidden_size, c.time_embed_dim, **dt)
        self.t_embedder = TimestepEmbedder(c.hidden_size, c.time_embed_dim, **dt)
        self.backbone = Backbone(c)
        self.final_layer = FinalLayer(c)
        self.pos_table = sincos_2d_table(c.hidden_size, c.pos_embed_max_size, c.pos_embed_base_size)
        if c.condition_kind == "class":  # a parameter of setup, so init creates it without a call
            self.class_embed = self.param(
                "class_embed",
                nn.with_logical_partitioning(phi3_normal, ("classes", "embed")),
                (c.num_classes + 1, c.hidden_size),
                c.param_dtype,
            )

    def embed_condition(self, condition: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Condition ids -> the prefix's embeddings (B, P, D) and its pads (B, P) bool.

        "class": ids (B,) in [0, num_classes], num_classes being the null class -> P = 1 row of
        ``class_embed``; "text": Phi-3 token ids (B, P), negative for pads -> rows of the token
        table (a pad's row is never seen).
        """
        c = self.cfg
        if c.condition_kind == "class":
            rows = jnp.asarray(self.class_embed, c.dtype)[condition][:, None]
        elif c.condition_kind == "text":
            rows = self.embed_tokens(jnp.maximum(condition, 0)).astype(c.dtype)
        else:
            raise ValueError(
                f"a condition was passed to a model without one (condition.kind {c.condition_kind!r})"
            )
        return rows, condition_is_pad(c, condition)

    def _with_condition(
        self, x: jax.Array, attrs: TokenAttrs, condition: jax.Array | None
    ) -> tuple[jax.Array, TokenAttrs]:
        """Frame tokens x (B, T, D) -> the condition's embeddings then x, (B, P + T, D), and the
        layout's attrs (of P + T tokens) with the condition's pads marked. No condition: as given."""
        if condition is None:
            return x, attrs
        prefix, prefix_is_pad = self.embed_condition(condition)
        return jnp.concatenate([prefix, x], axis=1), layout.with_prefix_pads(attrs, prefix_is_pad)

    def _marker(self, token_id: int, batch_shape) -> jax.Array:
        """Embedding of one special token, broadcast to (*batch_shape, 1, D)."""
        e = self.embed_tokens(jnp.array(token_id, jnp.int32)).astype(self.cfg.dtype)
        return jnp.broadcast_to(e, (*batch_shape, 1, self.cfg.hidden_size))

    def _patches(self, embedder: PatchEmbed, latents: jax.Array) -> jax.Array:
        """(B, F, h, w, C) -> (B, F, S, D): patch embedding + the centre-cropped 2-D table."""
        p = self.cfg.patch_size
        pe = cropped_pos_embed(self.pos_table, latents.shape[-3] // p, latents.shape[-2] // p)
        return embedder(latents) + jnp.asarray(pe, self.cfg.dtype)

    def embed_clean(self, latents: jax.Array) -> jax.Array:
        """(B, F, h, w, C) -> (B, F·L, D): blocks ``[<img>, patches, </img>]``."""
        c = self.cfg
        patches = self._patches(self.input_x_embedder, latents)
        lead = patches.shape[:2]
        blocks = jnp.concatenate(
            [self._marker(c.token_image_start, lead), patches, self._marker(c.token_image_end, lead)], axis=2
        )
        return blocks.reshape(lead[0], -1, c.hidden_size)

    def embed_noisy(self, latents: jax.Array, t: jax.Array) -> jax.Array:
        """(B, F, h, w, C), t (B, F) -> (B, F·L, D): blocks ``[<|diffusion|>, TIME(t), patches]``."""
        c = self.cfg
        patches = self._patches(self.x_embedder, latents)
        lead = patches.shape[:2]
        time = self.time_token(t).astype(c.dtype)[:, :, None, :]
        blocks = jnp.concatenate([self._marker(c.token_diffusion, lead), time, patches], axis=2)
        return blocks.reshape(lead[0], -1, c.hidden_size)

    def head(self, hidden: jax.Array, t: jax.Array, height: int, width: int) -> jax.Array:
        """Noisy-block outputs (B, F·L, D), t (B, F) -> x1 prediction (B, F, h, w, C) fp32."""
        b, f = t.shape
        patches = hidden.reshape(b, f, -1, self.cfg.hidden_size)[:, :, 2:]  # drop <|diffusion|>, TIME
        return self.patch_head(patches, t, height, width)

    def patch_head(self, patches: jax.Array, t: jax.Array, height: int, width: int) -> jax.Array:
        """Patch outputs (B, F, S, D), t (B, F) -> x1 prediction (B, F, h, w, C) fp32."""
        out = self.final_layer(patches, self.t_embedder(t))
        return unpatchify(out, self.cfg.patch_size, height, width)

    def __call__(
        self,
        noisy: jax.Array,
        clean: jax.Array,
        t: jax.Array,
        attrs: TokenAttrs,
        positions: jax.Array,
        condition: jax.Array | None = None,
    ) -> jax.Array:
        """Training pass. noisy x_t and clean inputs (B, N, h, w, C), t (B, N), layout of P + 2N·L
        tokens (P = cfg.condition_length with a ``condition``, ids as :meth:`embed_condition`, else 0).

        Returns the x1 prediction for every frame, (B, N, h, w, C) fp32.
        """
        noisy_tokens = self.embed_noisy(noisy, t)
        x = jnp.concatenate([self.embed_clean(clean), noisy_tokens], axis=1)
        x, attrs = self._with_condition(x, attrs, condition)
        hidden, _ = self.backbone(x, positions, attrs)
        return self.head(hidden[:, -noisy_tokens.shape[1] :], t, noisy.shape[-3], noisy.shape[-2])

    def prefill(
        self, clean: jax.Array, attrs: TokenAttrs, positions: jax.Array, condition: jax.Array | None = None
    ) -> KVPrefix:
        """Clean history (B, n, h, w, C), after the ``condition`` if given -> per-layer keys/values
        (num_layers, B, P + n·L, H, Dh) of ``history_layout``'s tokens.

        Exact for any later query, because clean and condition tokens never attend to noisy ones.
        """
        x, attrs = self._with_condition(self.embed_clean(clean), attrs, condition)
        _, kv = self.backbone(x, positions, attrs, return_kv=True)
        return kv

    def denoise(
        self,
        noisy: jax.Array,
        t: jax.Array,
        attrs: TokenAttrs,
        positions: jax.Array,
        prefix: KVPrefix | None,
        prefix_attrs: TokenAttrs | None,
    ) -> jax.Array:
        """Noisy clip (B, g, h, w, C) at times t (B, g) against a cached history -> x1 (B, g, h, w, C).

        ``attrs``/``positions`` are in block order; the clip runs in grouped order (an exact
        permutation: positions and attributes travel with the tokens), whose first 2g tokens are
        the markers, so that on a GPU the patches' attention is one dense fused kernel. The
        ``prefix`` holds a condition's keys too, if any (``prefill`` with a condition).
        """
        b, g = t.shape
        x = self.embed_noisy(noisy, t)
        order = layout.grouped_clip_order(g, x.shape[1] // g)
        x = x[:, order]
        attrs = TokenAttrs(*(a[..., order] for a in attrs))
        # The dense clip kernel needs every row's pad keys last; a text prefix has its pads
        # between its words and the history, so text-conditioned clips take the masked kernel.
        special = None if self.cfg.condition_kind == "text" else 2 * g
        hidden, _ = self.backbone(
            x, positions[..., order], attrs, prefix, prefix_attrs, special_queries=special
        )
        patches = hidden[:, 2 * g :].reshape(b, g, -1, self.cfg.hidden_size)
        return self.patch_head(patches, t, noisy.shape[-3], noisy.shape[-2])

    def sequence(
        self,
        clean: jax.Array,
        noisy: jax.Array,
        t: jax.Array,
        attrs: TokenAttrs,
        positions: jax.Array,
        condition: jax.Array | None = None,
    ) -> jax.Array:
        """Uncached reference: [condition], history and clip in one sequence, as the official
        sampler runs.

        clean (B, n, h, w, C), noisy (B, g, h, w, C), t (B, g) -> x1 of the clip (B, g, h, w, C).
        """
        clip = self.embed_noisy(noisy, t)
        x = jnp.concatenate([self.embed_clean(clean), clip], axis=1)
        x, attrs = self._with_condition(x, attrs, condition)
        hidden, _ = self.backbone(x, positions, attrs)
        return self.head(hidden[:, -clip.shape[1] :], t, noisy.shape[-3], noisy.shape[-2])


# The condition's own parameters: no unconditioned (pre-trained or converted) checkpoint holds
# them, and a LoRA run trains them beside the adapters. A text condition has none: it reads the
# Phi-3 token table, a pre-trained parameter that LoRA leaves frozen.
CONDITION_PARAMS = (("class_embed",),)


def is_condition_param(path: tuple[str, ...]) -> bool:
    """Whether the parameter at ``path`` (a tuple of names from the root) is a condition's own."""
    return tuple(path) in CONDITION_PARAMS


def condition_is_pad(cfg: ModelConfig, condition: jax.Array) -> jax.Array:
    """Pads of the prefix of condition ids (see ``VideoGPT.embed_condition``) -> (B, P) bool."""
    if cfg.condition_kind == "text":
        return condition < 0
    return jnp.zeros((condition.shape[0], cfg.condition_length), bool)


def null_condition(cfg: ModelConfig, batch: int) -> jax.Array:
    """The null condition of ``batch`` rows: the null class (B,) or an all-pad text (B, P) int32."""
    if cfg.condition_kind == "class":
        return jnp.full((batch,), cfg.num_classes, jnp.int32)
    return jnp.full((batch, cfg.condition_length), -1, jnp.int32)


def drop_condition(cfg: ModelConfig, key: jax.Array, condition: jax.Array, rate: float) -> jax.Array:
    """Condition ids (B,) or (B, P) with each row replaced by the null condition with probability
    ``rate`` (training's condition dropout, which condition guidance needs)."""
    drop = jax.random.bernoulli(key, rate, condition.shape[:1])
    drop = drop.reshape(-1, *[1] * (condition.ndim - 1))
    return jnp.where(drop, null_condition(cfg, condition.shape[0]), condition)


def model_from_config(config: ml_collections.ConfigDict) -> VideoGPT:
    """The Video-GPT module that ``config.model`` describes."""
    return VideoGPT(ModelConfig.from_config(config))


def check_feature_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Layer numbers (1 = after the first decoder layer) sorted and without repeats; ValueError
    naming the model's depth if one is outside 1..num_layers."""
    wrong = [layer for layer in layers if not 1 <= layer <= num_layers]
    if wrong or not layers:
        raise ValueError(
            f"layers {list(layers)}: the model has {num_layers} layers, so a layer is a number "
            f"from 1 (after the first) to {num_layers} (after the last)"
        )
    return tuple(sorted(set(layers)))


def clean_stream_features(cfg: ModelConfig, params, latents: jax.Array, layers: Sequence[int]) -> jax.Array:
    """Hidden states of the clean stream after each of ``layers``: the residual stream (before the
    final norm) of clean blocks ``[<img>, patches, </img>]``, frame-causal as in
    :meth:`VideoGPT.prefill` (no noisy copies, no time tokens).

    Only the first ``max(layers)`` decoder layers run; deeper layers are never read. Works on the
    stacked parameters of ``scan_layers`` (scanned in segments between requested layers) and on
    unrolled ones. latents (B, F, h, w, C) -> (len(layers), B, F, S + 2, D) in ``cfg.dtype``, the
    layers in increasing order. Jit-able with ``layers`` static.
    """
    layers = check_feature_layers(layers, cfg.num_layers)
    b, f = latents.shape[:2]
    x = VideoGPT(cfg).apply({"params": params}, latents, method=VideoGPT.embed_clean).astype(cfg.dtype)
    block_len = x.shape[1] // f
    attrs, positions = layout.history_layout(f, block_len - 2)
    attrs, positions = batched_attrs(attrs, b), jnp.broadcast_to(positions, (b, x.shape[1]))
    cos, sin = rope_tables(cfg, positions)
    layer = DecoderLayer(cfg)

    def run(h: jax.Array, layer_params) -> jax.Array:
        return layer.apply({"params": layer_params}, h, cos, sin, attrs, None, None)[0]

    stack, done, out = params["backbone"], 0, []
    for stop in layers:
        if cfg.scan_layers:
            segment = jax.tree.map(lambda a, start=done, stop=stop: a[start:stop], stack["layers"])
            x, _ = jax.lax.scan(lambda h, p: (run(h, p), None), x, segment)
        else:
            for i in range(done, stop):
                x = run(x, stack[f"layers_{i}"])
        out.append(x)
        done = stop
    return jnp.stack(out).reshape(len(layers), b, f, block_len, -1)


def example_inputs(config: ml_collections.ConfigDict, batch: int = 1, num_frames: int | None = None):
    """Zero inputs of the training pass (for init and shape inference): noisy, clean, t, attrs, positions."""
    n = config.data.num_frames if num_frames is None else num_frames
    d = config.data
    lat = jnp.zeros((batch, n, d.latent_height, d.latent_width, config.model.latent_channels))
    clip_ids = jnp.broadcast_to(layout.per_frame_clip_ids(n), (batch, n))
    attrs, positions = layout.training_layout(clip_ids, config_lib.sizes(config).tokens_per_frame)
    return lat, lat, jnp.zeros((batch, n)), attrs, positions


def abstract_params(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Any:
    """ShapeDtypeStructs of the (unboxed) Video-GPT parameters of ``config``, no memory for the
    arrays; with ``mesh``, carrying their shardings on it."""
    model = model_from_config(config)
    # Two frames suffice: no parameter depends on the sequence length.
    init = lambda key: model.init(key, *example_inputs(config, num_frames=2))["params"]  # noqa: E731
    boxed = jax.eval_shape(init, jax.random.key(0))
    return (
        mesh_lib.unboxed(boxed)
        if mesh is None
        else mesh_lib.abstract_on_mesh(mesh, boxed, config.mesh.logical_axis_rules)
    )


def random_params(config: ml_collections.ConfigDict, mesh: Mesh, seed: int = 0) -> Any:
    """Random parameters of ``config`` on ``mesh`` (each array on its own sharding), for timing and
    memory runs: the model's init plus N(0, 0.02²) everywhere, so that the zero-initialised final
    layer and gates still carry signal. Call under ``sharding_context(mesh, ...)``."""
    model = model_from_config(config)
    shardings = jax.tree.map(lambda a: a.sharding, abstract_params(config, mesh))

    def draw(key: jax.Array) -> Any:
        init = mesh_lib.unboxed(model.init(key, *example_inputs(config, num_frames=2))["params"])
        noise_key = jax.random.fold_in(key, 1)
        return jax.tree.map(lambda x: x + 0.02 * jax.random.normal(noise_key, x.shape, x.dtype), init)

    return jax.jit(draw, out_shardings=shardings)(jax.random.key(seed))


# (module, parameter) of each layer's projection kernels: read only through a cast to cfg.dtype or float8
PROJECTION_KERNELS = (("attention", "qkv"), ("attention", "out"), ("mlp", "gate_up"), ("mlp", "down"))


def inference_params(cfg: ModelConfig, params: Any) -> Any:
    """``params`` as sampling holds them, each array on its own sharding: every layer's projection
    kernels in the compute dtype ``cfg.dtype``, or with ``cfg.fp8_projections`` in float8 with a
    scale per layer beside each (``<kernel>_fp8_scale``, see :func:`vgpt_jax.nn.fp8.scaled_fp8`).

    The layers cast the kernels to the compute dtype (or quantize them) at every use, so outputs
    are bit for bit unchanged; for inference this halves (quarters) their memory against fp32 master
    weights and takes the cast out of the sampler's loops, where XLA repeats it every denoising
    step. ``params``: unboxed arrays."""
    flat = traverse_util.flatten_dict(params)
    kernels = {path for path in flat if tuple(path[-2:]) in PROJECTION_KERNELS}
    out_shardings = {path: getattr(x, "sharding", None) for path, x in flat.items()}
    if cfg.fp8_projections:
        for path in kernels:
            out_shardings[fp8_scale_path(path)] = _replicated_like(out_shardings[path])

    def convert(tree: dict) -> dict:
        out = dict(tree)
        for path in kernels:
            if not cfg.fp8_projections:
                out[path] = tree[path].astype(cfg.dtype)
            elif "layers" in path:  # nn.scan's stack: one scale per layer, as each layer would take
                out[path], out[fp8_scale_path(path)] = jax.vmap(scaled_fp8)(tree[path])
            else:
                out[path], out[fp8_scale_path(path)] = scaled_fp8(tree[path])
        return out

    unplaced = not all(out_shardings.values())
    return traverse_util.unflatten_dict(
        jax.jit(convert, out_shardings=None if unplaced else out_shardings)(flat)
    )


def _replicated_like(sharding: Any) -> Any:
    """A small array's sharding beside an array on ``sharding``: replicated over its mesh or on its
    device; None where neither applies (the caller then lets jit place it)."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return sharding if isinstance(sharding, SingleDeviceSharding) else None


def fp8_scale_path(kernel_path: tuple[str, ...]) -> tuple[str, ...]:
    return (*kernel_path[:-1], kernel_path[-1] + FP8_SCALE_SUFFIX)


def num_params(params) -> int:
    """Total number of parameter entries of a (possibly abstract) parameter tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
