"""The clip tokenizer: an image AutoencoderKL (SDXL-VAE architecture) applied to every frame.

Frames are channels-last, in [-1, 1]. A frame of H x W pixels becomes a latent of H/f x W/f x C,
f = 2^(len(block_out_channels) - 1) (8 for the SDXL VAE). Video-GPT's latent is the posterior
*sample* times ``scaling_factor`` (no shift); decoding divides by it first (spec §2).

Parameters map one to one onto a diffusers ``AutoencoderKL`` state dict (``E`` = encoder or
decoder, ``i`` the block, ``j`` the resnet; conv kernels are HWIO = torch OIHW permuted
(2, 3, 1, 0); dense kernels are torch's weight transposed; GroupNorm ``scale`` = ``weight``):

=============================================  ================================================
ours (``params/...``)                           diffusers tensor
=============================================  ================================================
``E/conv_in``, ``E/conv_out``                   ``E.conv_in``, ``E.conv_out``
``E/norm_out``                                  ``E.conv_norm_out``
``encoder/down_i/resnet_j/{norm1,conv1,...}``   ``encoder.down_blocks.i.resnets.j.{norm1,conv1,...}``
``encoder/down_i/downsample/conv``              ``encoder.down_blocks.i.downsamplers.0.conv``
``decoder/up_i/resnet_j/...``                   ``decoder.up_blocks.i.resnets.j...``
``decoder/up_i/upsample/conv``                  ``decoder.up_blocks.i.upsamplers.0.conv``
``E/mid/resnet_j``                              ``E.mid_block.resnets.j``
``E/mid/attention/norm``                        ``E.mid_block.attentions.0.group_norm``
``E/mid/attention/{query,key,value,out}``       ``E.mid_block.attentions.0.{to_q,to_k,to_v,to_out.0}``
``resnet_j/shortcut`` (1x1, channels change)    ``resnets.j.conv_shortcut``
``quant_conv``, ``post_quant_conv`` (1x1)       ``quant_conv``, ``post_quant_conv``
=============================================  ================================================
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgpt_jax import config as config_lib
from vgpt_jax.parallel import mesh as mesh_lib

PRECISIONS = ("default", "high", "highest")
DTYPES = ("float32", "bfloat16", "float16")
LOGVAR_RANGE = (-30.0, 20.0)  # the posterior's log-variance is clamped to this range
# Training from scratch starts from a near-deterministic posterior (std e^-5): with the small KL
# weight a unit-variance start only slows early training. Imported weights replace it.
INITIAL_LOGVAR = -10.0


def base_tokenizer_config() -> ml_collections.ConfigDict:
    """A fresh copy of ``base_config()``'s tokenizer section (the SDXL VAE's sizes)."""
    return config_lib.base_config().tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """The hashable tokenizer hyper-parameters (a Linen attribute), built from ``config.tokenizer``.

    Defaults are the SDXL VAE's (``config.base_config``'s tokenizer section).
    """

    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    scaling_factor: float = 0.13025
    dtype: Any = jnp.float32
    precision: str = "default"
    chunk_frames: int = 8
    # how its parameters' logical axes map to the mesh (config.tokenizer.logical_axis_rules)
    logical_axis_rules: mesh_lib.AxisRules = dataclasses.field(
        default_factory=lambda: mesh_lib.axis_rules(base_tokenizer_config().logical_axis_rules)
    )

    def __post_init__(self):
        checks = (
            (self.in_channels > 0, "in_channels", self.in_channels, "a positive integer"),
            (
                len(self.block_out_channels) > 0 and min(self.block_out_channels) > 0,
                "block_out_channels",
                self.block_out_channels,
                "a non-empty tuple of positive widths",
            ),
            (self.layers_per_block > 0, "layers_per_block", self.layers_per_block, "a positive integer"),
            (self.latent_channels > 0, "latent_channels", self.latent_channels, "a positive integer"),
            (
                self.norm_num_groups > 0
                and all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
                "norm_num_groups",
                self.norm_num_groups,
                f"a divisor of every width in block_out_channels = {self.block_out_channels}",
            ),
            (self.norm_eps > 0, "norm_eps", self.norm_eps, "> 0"),
            (self.scaling_factor > 0, "scaling_factor", self.scaling_factor, "> 0"),
            (self.precision in PRECISIONS, "precision", self.precision, f"one of {PRECISIONS}"),
            (self.chunk_frames > 0, "chunk_frames", self.chunk_frames, "a positive integer"),
        )
        for ok, field, value, allowed in checks:
            if not ok:
                raise ValueError(f"config.tokenizer.{field} = {value!r} is not allowed: {allowed}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> TokenizerConfig:
        """From a whole experiment config (its ``tokenizer`` section); validates every field.

        Lists (a config read back from JSON) are taken for tuples.
        """
        t = config.tokenizer
        if t.dtype not in DTYPES:
            raise ValueError(f"config.tokenizer.dtype = {t.dtype!r} is not allowed: one of {DTYPES}")
        return cls(
            in_channels=t.in_channels,
            block_out_channels=tuple(t.block_out_channels),
            layers_per_block=t.layers_per_block,
            latent_channels=t.latent_channels,
            norm_num_groups=t.norm_num_groups,
            norm_eps=t.norm_eps,
            scaling_factor=t.scaling_factor,
            dtype=jnp.dtype(t.dtype),
            precision=t.precision,
            chunk_frames=t.chunk_frames,
            logical_axis_rules=mesh_lib.axis_rules(t.logical_axis_rules),
        )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent along each side: one stride-2 step between consecutive widths."""
        return 2 ** (len(self.block_out_channels) - 1)


# The TokenizerConfig fields that a set of weights fixes (the others are run-time choices).
WEIGHT_FIELDS = (
    "in_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "norm_eps",
    "scaling_factor",
)


def with_weight_fields(config: ml_collections.ConfigDict, cfg: TokenizerConfig) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``tokenizer`` WEIGHT_FIELDS are ``cfg``'s, so that a config saved
    with a model describes the tokenizer its latents came from (e.g. a fitted scaling_factor)."""
    return config_lib.with_fields(
        config, {f"tokenizer.{field}": getattr(cfg, field) for field in WEIGHT_FIELDS}
    )


_LECUN = nn.initializers.lecun_normal()


# -- layers --------------------------------------------------------------------------------------


def _conv(
    cfg: TokenizerConfig,
    features: int,
    kernel: int,
    name: str,
    stride: int = 1,
    pad: int = 0,
    kernel_init=_LECUN,
    bias_init=nn.initializers.zeros,
):
    """A biased 2-D convolution (NHWC, HWIO kernel) with logical axis names on its parameters."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dtype=cfg.dtype,
        precision=cfg.precision,
        kernel_init=nn.with_logical_partitioning(
            kernel_init, ("conv_height", "conv_width", "conv_in", "conv_out")
        ),
        bias_init=nn.with_logical_partitioning(bias_init, ("conv_out",)),
        name=name,
    )


def _dense(cfg: TokenizerConfig, features: int, name: str, kernel_init=_LECUN):
    return nn.Dense(
        features,
        dtype=cfg.dtype,
        precision=cfg.precision,
        kernel_init=nn.with_logical_partitioning(kernel_init, ("conv_in", "conv_out")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
        name=name,
    )


def _moments_bias(key, shape, dtype=jnp.float32) -> jax.Array:
    """quant_conv's bias: 0 for the mean half, INITIAL_LOGVAR for the log-variance half."""
    del key
    return jnp.concatenate([jnp.zeros(shape[0] // 2, dtype), jnp.full(shape[0] // 2, INITIAL_LOGVAR, dtype)])


def _group_norm(cfg: TokenizerConfig, name: str):
    # Two-pass variance (not E[x²] - E[x]²) and fp32 statistics, as PyTorch's GroupNorm computes.
    return nn.GroupNorm(
        cfg.norm_num_groups,
        epsilon=cfg.norm_eps,
        dtype=cfg.dtype,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


class ResnetBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))); a 1x1 shortcut when the width changes.

    (N, H, W, C_in) -> (N, H, W, features).
    """

    cfg: TokenizerConfig
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.silu(_group_norm(self.cfg, "norm1")(x))
        h = _conv(self.cfg, self.features, 3, "conv1", pad=1)(h)
        h = nn.silu(_group_norm(self.cfg, "norm2")(h))
        # zero-initialised: every residual branch starts as the identity (no effect on imports)
        h = _conv(self.cfg, self.features, 3, "conv2", pad=1, kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.features:
            x = _conv(self.cfg, self.features, 1, "shortcut")(x)
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (not centred).

    (N, H, W, C) -> (N, H/2, W/2, C).
    """

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(self.cfg, x.shape[-1], 3, "conv", stride=2)(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv. (N, H, W, C) -> (N, 2H, 2W, C)."""

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(self.cfg, x.shape[-1], 3, "conv", pad=1)(x)


class Stage(nn.Module):
    """``num_resnets`` resnet blocks at one resolution, then an optional resampling step.

    ``resample``: "down" (encoder), "up" (decoder) or "" (the last stage of either).
    """

    cfg: TokenizerConfig
    features: int
    num_resnets: int
    resample: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_resnets):
            x = ResnetBlock(self.cfg, self.features, name=f"resnet_{j}")(x)
        if self.resample == "down":
            x = Downsample(self.cfg, name="downsample")(x)
        elif self.resample == "up":
            x = Upsample(self.cfg, name="upsample")(x)
        return x


class SpatialSelfAttention(nn.Module):
    """x + out(softmax(q kᵀ / √C) v) over the H·W positions of each frame; one head, q/k/v from GN(x).

    (N, H, W, C) -> (N, H, W, C); softmax in fp32.
    """

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        y = _group_norm(self.cfg, "norm")(x).reshape(n, h * w, c)
        q, k, v = (_dense(self.cfg, c, name)(y) for name in ("query", "key", "value"))
        scores = jnp.einsum("nqc,nkc->nqk", q, k, precision=self.cfg.precision) / math.sqrt(c)
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        y = jnp.einsum("nqk,nkc->nqc", weights, v, precision=self.cfg.precision)
        out = _dense(self.cfg, c, "out", kernel_init=nn.initializers.zeros)  # starts as the identity
        return x + out(y).reshape(n, h, w, c)


class MidBlock(nn.Module):
    """resnet, self-attention, resnet at the lowest resolution. (N, h, w, C) -> (N, h, w, C)."""

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(self.cfg, c, name="resnet_0")(x)
        x = SpatialSelfAttention(self.cfg, name="attention")(x)
        return ResnetBlock(self.cfg, c, name="resnet_1")(x)


class Encoder(nn.Module):
    """(N, H, W, in_channels) -> (N, H/f, W/f, 2·latent_channels): posterior moments before quant_conv."""

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        widths = c.block_out_channels
        x = _conv(c, widths[0], 3, "conv_in", pad=1)(x)
        for i, width in enumerate(widths):
            resample = "down" if i < len(widths) - 1 else ""
            x = Stage(c, width, c.layers_per_block, resample, name=f"down_{i}")(x)
        x = MidBlock(c, name="mid")(x)
        x = nn.silu(_group_norm(c, "norm_out")(x))
        return _conv(c, 2 * c.latent_channels, 3, "conv_out", pad=1)(x)


class Decoder(nn.Module):
    """(N, h, w, latent_channels) -> (N, h·f, w·f, in_channels); widths in reverse order."""

    cfg: TokenizerConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.cfg
        widths = c.block_out_channels[::-1]
        x = _conv(c, widths[0], 3, "conv_in", pad=1)(z)
        x = MidBlock(c, name="mid")(x)
        for i, width in enumerate(widths):
            resample = "up" if i < len(widths) - 1 else ""
            # one more resnet per stage than the encoder has
            x = Stage(c, width, c.layers_per_block + 1, resample, name=f"up_{i}")(x)
        x = nn.silu(_group_norm(c, "norm_out")(x))
        return _conv(c, c.in_channels, 3, "conv_out", pad=1)(x)


class AutoencoderKL(nn.Module):
    """Encoder -> quant_conv -> diagonal Gaussian posterior; post_quant_conv -> decoder.

    Works on single frames (N, H, W, C); latents are *unscaled* here.
    """

    cfg: TokenizerConfig

    def setup(self):
        c = self.cfg
        self.encoder = Encoder(c)
        self.quant_conv = _conv(c, 2 * c.latent_channels, 1, "quant_conv", bias_init=_moments_bias)
        self.post_quant_conv = _conv(c, c.latent_channels, 1, "post_quant_conv")
        self.decoder = Decoder(c)

    def posterior(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(N, H, W, C) -> mean, logvar (N, H/f, W/f, latent) fp32; logvar clamped to [-30, 20]."""
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """(N, h, w, latent) -> (N, h·f, w·f, C) fp32, unclamped (nominally [-1, 1])."""
        return self.decoder(self.post_quant_conv(z.astype(self.cfg.dtype))).astype(jnp.float32)

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Training pass: reconstruction of a posterior sample, with the posterior's mean, logvar."""
        mean, logvar = self.posterior(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar


# -- frame-wise application: checks, chunking, sharding -------------------------------------------


def check_frames(shape: tuple[int, ...], cfg: TokenizerConfig) -> None:
    """ValueError unless ``shape`` is (..., H, W, in_channels) with H, W multiples of f."""
    f = cfg.downsample_factor
    if len(shape) < 3:
        raise ValueError(f"frames of shape {shape}: expected (..., height, width, {cfg.in_channels})")
    *_, h, w, c = shape
    if c != cfg.in_channels:
        raise ValueError(
            f"frames of shape {shape}: expected {cfg.in_channels} channels in the last axis, got {c} "
            "(frames are channels-last)"
        )
    if h % f or w % f or h == 0 or w == 0:
        raise ValueError(
            f"frames of shape {shape}: height and width must be positive multiples of {f} (the "
            f"tokenizer's downsampling, 2^(len(block_out_channels) - 1)); got {h}x{w}, crop to "
            f"{h // f * f}x{w // f * f}"
        )


def check_latents(shape: tuple[int, ...], cfg: TokenizerConfig) -> None:
    """ValueError unless ``shape`` is (..., h, w, latent_channels)."""
    if len(shape) < 3 or shape[-1] != cfg.latent_channels:
        raise ValueError(
            f"latents of shape {shape}: expected (..., height, width, {cfg.latent_channels}) (channels-last)"
        )


def _frame_axes(mesh: Mesh | None) -> tuple[str, ...]:
    """Frames are independent, so every mesh axis splits them."""
    return () if mesh is None else tuple(mesh.axis_names)


def map_frames(fn, frames: jax.Array, chunk: int, mesh: Mesh | None = None):
    """Applies ``fn`` ((n, ...) -> pytree of (n, ...)) to (N, ...) frames, ``chunk`` per device at a time.

    Each device takes a contiguous block of the N frames (the layout of a leading axis sharded over
    all mesh axes) and walks through it in ``lax.map`` steps, so the live activations are those of
    ``chunk`` frames per device. N is padded with zero frames to a whole number of steps.
    """
    shards = 1 if mesh is None else mesh.size
    n = frames.shape[0]
    per_shard = -(-n // shards)
    steps = max(-(-per_shard // chunk), 1)
    chunk = -(-per_shard // steps)  # the same number of steps with the least padding
    padded = shards * steps * chunk
    x = jnp.pad(frames, ((0, padded - n),) + ((0, 0),) * (frames.ndim - 1))
    x = x.reshape(shards, steps, chunk, *x.shape[1:]).swapaxes(0, 1)
    x = x.reshape(steps, shards * chunk, *x.shape[3:])
    if mesh is not None:
        x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, _frame_axes(mesh))))
    y = jax.lax.map(fn, x)

    def unchunk(a: jax.Array) -> jax.Array:
        a = a.reshape(steps, shards, chunk, *a.shape[2:]).swapaxes(0, 1)
        return a.reshape(padded, *a.shape[3:])[:n]

    return jax.tree.map(unchunk, y)


def _flat(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    """(..., H, W, C) -> (N, H, W, C) and the leading shape."""
    return x.reshape(-1, *x.shape[-3:]), x.shape[:-3]


def posterior(model: AutoencoderKL, params, frames: jax.Array, *, mesh: Mesh | None = None):
    """Unscaled posterior (mean, std) of every frame: (..., H, W, C) -> 2 x (..., H/f, W/f, latent)."""
    check_frames(frames.shape, model.cfg)
    x, lead = _flat(frames)

    def moments(chunk: jax.Array):
        mean, logvar = model.apply({"params": params}, chunk, method=AutoencoderKL.posterior)
        return mean, jnp.exp(0.5 * logvar)

    mean, std = map_frames(moments, x, model.cfg.chunk_frames, mesh)
    return mean.reshape(*lead, *mean.shape[1:]), std.reshape(*lead, *std.shape[1:])


def encode(
    model: AutoencoderKL, params, frames: jax.Array, key: jax.Array | None, *, mesh: Mesh | None = None
) -> jax.Array:
    """Scaled latents: (mean + std·ε) × scaling_factor, or the mean's when ``key`` is None.

    (..., H, W, C) in [-1, 1] -> (..., H/f, W/f, latent) fp32. Jit-able.
    """
    mean, std = posterior(model, params, frames, mesh=mesh)
    z = mean if key is None else mean + std * jax.random.normal(key, mean.shape, mean.dtype)
    return z * model.cfg.scaling_factor


def decode(
    model: AutoencoderKL, params, latents: jax.Array, scaled: bool = True, *, mesh: Mesh | None = None
) -> jax.Array:
    """Frames of latents (scaled ones are divided by scaling_factor first), unclamped, nominally [-1, 1].

    (..., h, w, latent) -> (..., h·f, w·f, C) fp32. Jit-able.
    """
    check_latents(latents.shape, model.cfg)
    z, lead = _flat(latents)
    if scaled:
        z = z / model.cfg.scaling_factor

    def frames_of(chunk: jax.Array) -> jax.Array:
        return model.apply({"params": params}, chunk, method=AutoencoderKL.decode)

    x = map_frames(frames_of, z, model.cfg.chunk_frames, mesh)
    return x.reshape(*lead, *x.shape[1:])


def signed_to_unit(frames: jax.Array) -> jax.Array:
    """Decoder output in [-1, 1] -> displayable pixels in [0, 1]: x·0.5 + 0.5, clamped."""
    return jnp.clip(frames * 0.5 + 0.5, 0.0, 1.0)


def init_params(model: AutoencoderKL, key: jax.Array):
    """Boxed (logically annotated) random parameters. No parameter depends on the frame size."""
    f = model.cfg.downsample_factor
    return model.init(key, jnp.zeros((1, f, f, model.cfg.in_channels)), jax.random.key(0))["params"]


def abstract_params(cfg: TokenizerConfig, mesh: Mesh | None = None):
    """ShapeDtypeStructs of the (unboxed) parameters, no memory for the arrays; with ``mesh``,
    carrying their (replicated) shardings on it."""
    boxed = jax.eval_shape(functools.partial(init_params, AutoencoderKL(cfg)), jax.random.key(0))
    if mesh is None:
        return mesh_lib.unboxed(boxed)
    return mesh_lib.abstract_on_mesh(mesh, boxed, cfg.logical_axis_rules)


def single_device_mesh() -> Mesh:
    """The default device as a mesh of size 1 (every axis 1)."""
    axes = ml_collections.ConfigDict({ax: 1 for ax in mesh_lib.MESH_AXES})
    return mesh_lib.make_mesh(axes, jax.devices()[:1])


def frames_sharding(mesh: Mesh) -> NamedSharding:
    """Frames (N, ...) split over every mesh axis."""
    return NamedSharding(mesh, PartitionSpec(_frame_axes(mesh)))


class TokenizerPrograms(NamedTuple):
    """The jitted frame-wise programs of a tokenizer on a mesh, each taking (params, x[, ...]):
    ``posterior`` (params, frames), ``encode`` (params, frames, key), ``decode`` (params,
    latents, scaled static). Frames or latents (N, ...) split over every mesh axis, N a multiple
    of the mesh size; parameters replicated."""

    posterior: Any
    encode: Any
    decode: Any


def tokenizer_programs(cfg: TokenizerConfig, mesh: Mesh) -> TokenizerPrograms:
    """The programs :class:`ClipTokenizer` runs, without parameters: their ``lower`` takes
    abstract inputs (``vgpt_jax.tools.sample_memory``)."""
    model = AutoencoderKL(cfg)
    params = jax.tree.map(lambda a: a.sharding, abstract_params(cfg, mesh))
    frames = frames_sharding(mesh)
    return TokenizerPrograms(
        posterior=jax.jit(
            functools.partial(posterior, model, mesh=mesh),
            in_shardings=(params, frames),
            out_shardings=(frames, frames),
        ),
        encode=jax.jit(
            functools.partial(encode, model, mesh=mesh),
            in_shardings=(params, frames, None),
            out_shardings=frames,
        ),
        decode=jax.jit(
            functools.partial(decode, model, mesh=mesh),
            in_shardings=(params, frames),
            out_shardings=frames,
            static_argnums=(2,),
        ),
    )


class ClipTokenizer:
    """A tokenizer bound to parameters and a mesh: jit-compiled, sharded encode/decode of clips.

    Every method takes frames or latents with any leading axes ((B, T, ...) clips, (N, ...)
    frames). They are flattened to frames, padded to a multiple of the device count and sharded
    over every mesh axis; parameters are replicated. ``encode_fn`` / ``decode_fn`` are the bare
    jit-able functions of (params, x[, key]) for use inside other programs.
    """

    def __init__(self, cfg: TokenizerConfig, params, mesh: Mesh | None = None):
        self.cfg = cfg
        self.model = AutoencoderKL(cfg)
        self.mesh = single_device_mesh() if mesh is None else mesh
        self.param_shardings = jax.tree.map(lambda a: a.sharding, abstract_params(cfg, self.mesh))
        self.params = jax.device_put(mesh_lib.unboxed(params), self.param_shardings)
        self.frames_sharding = frames_sharding(self.mesh)
        self.encode_fn = functools.partial(encode, self.model, mesh=self.mesh)
        self.decode_fn = functools.partial(decode, self.model, mesh=self.mesh)
        self._posterior, self._encode, self._decode = tokenizer_programs(cfg, self.mesh)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, mesh: Mesh | None = None, key=None):
        """Randomly initialised from ``config.tokenizer`` (key: default from ``config.seed``)."""
        cfg = TokenizerConfig.from_config(config)
        key = jax.random.key(config.seed) if key is None else key
        return cls(cfg, init_params(AutoencoderKL(cfg), key), mesh)

    def _run(self, fn, x, *args):
        """Flattens to frames, pads to the device count, runs ``fn``, and restores the leading axes.

        Host arrays are padded on the host; device arrays (on any devices) where they are.
        """
        flat, lead = _flat(x if isinstance(x, jax.Array) else np.asarray(x, np.float32))
        n = flat.shape[0]
        xp = jnp if isinstance(flat, jax.Array) else np
        flat = xp.pad(flat, ((0, -n % self.mesh.size), (0, 0), (0, 0), (0, 0)))
        out = fn(self.params, jax.device_put(flat, self.frames_sharding), *args)
        return jax.tree.map(lambda a: a[:n].reshape(*lead, *a.shape[1:]), out)

    def posterior(self, frames) -> tuple[jax.Array, jax.Array]:
        """Unscaled (mean, std): (..., H, W, C) in [-1, 1] -> 2 x (..., H/f, W/f, latent)."""
        check_frames(np.shape(frames), self.cfg)
        return self._run(self._posterior, frames)

    def encode(self, frames, key: jax.Array | None = None) -> jax.Array:
        """Scaled latents (posterior sample × scaling_factor; the mean's when ``key`` is None)."""
        check_frames(np.shape(frames), self.cfg)
        return self._run(self._encode, frames, key)

    def decode(self, latents, scaled: bool = True) -> jax.Array:
        """Frames (..., H, W, C), unclamped; ``scaled`` latents are divided by scaling_factor first."""
        check_latents(np.shape(latents), self.cfg)
        return self._run(self._decode, latents, scaled)

    def decode_to_pixels(self, latents) -> jax.Array:
        """The release's decode: scaled latents -> frames in [0, 1] (x·0.5 + 0.5, clamped)."""
        return signed_to_unit(self.decode(latents))
