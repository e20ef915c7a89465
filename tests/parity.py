"""Parity checks against the official code (used by the tests): NCHW NumPy in, NCHW NumPy out.

Both functions run the model in fp32 with the ``xla`` attention backend, through our own layout:
:func:`predict_x1` is the training pass (``VideoGPT.__call__`` on the ``[clean][noisy]`` sequence),
:func:`predict_x1_cfg` is one model evaluation of the sampler (``prefill`` once, then ``denoise``
on the conditional and the history-free rows against the cached keys/values).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT
from vgpt_jax.nn.tokens import TokenAttrs


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The model of ``config`` in fp32 (compute and parameters) on the ``xla`` backend, without remat."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.attention.backend = "xla"
    c.model.remat_policy = "none"
    return ModelConfig.from_config(c)


def _variables(params) -> dict:
    return {"params": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)}


def _to_model(frames: np.ndarray) -> jax.Array:
    """(F, C, h, w) -> (1, F, h, w, C) float32."""
    return jnp.asarray(np.moveaxis(np.asarray(frames, np.float32), 1, -1)[None])


def _from_model(frames: jax.Array) -> np.ndarray:
    """(1, F, h, w, C) -> (F, C, h, w) float32."""
    return np.moveaxis(np.asarray(frames, np.float32)[0], -1, 1)


def _tokens_per_frame(cfg: ModelConfig, name: str, frames: np.ndarray) -> int:
    """S of (F, C, h, w) latents; ValueError naming ``name`` if they do not fit the model."""
    p = cfg.patch_size
    if (
        frames.ndim != 4
        or frames.shape[1] != cfg.latent_channels
        or frames.shape[2] % p
        or frames.shape[3] % p
    ):
        raise ValueError(
            f"{name} has shape {frames.shape}, expected (frames, {cfg.latent_channels}, h, w) with h and w "
            f"multiples of the patch size {p}"
        )
    return (frames.shape[2] // p) * (frames.shape[3] // p)


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise ValueError(f"{name} has shape {array.shape}, expected {expected}")


def predict_x1(
    config: ml_collections.ConfigDict,
    params,
    partition: Sequence[int],
    noisy: np.ndarray,
    t: np.ndarray,
    clean: np.ndarray,
) -> np.ndarray:
    """x1 prediction of the training pass for one sample.

    partition: frames per clip [b_1 … b_K], N = Σ b_k; noisy: [N, C, h, w] x_t of every frame;
    t: [N] per frame; clean: [N − b_K, C, h, w] the clean model inputs (the last clip has none).
    Returns [N, C, h, w] float32.
    """
    cfg = model_config(config)
    noisy, t, clean = np.asarray(noisy), np.asarray(t), np.asarray(clean)
    s = _tokens_per_frame(cfg, "noisy", noisy)
    clip_ids = layout.clip_ids_from_partition(partition)
    n, last = len(clip_ids), int(partition[-1])
    _check_shape("noisy", noisy, (n, *noisy.shape[1:]))
    _check_shape("t", t, (n,))
    _check_shape("clean", clean, (n - last, *noisy.shape[1:]))
    # Our layout holds a clean copy of every frame; those of the last clip are pad tokens (never seen).
    clean = np.concatenate([clean, np.zeros((last, *noisy.shape[1:]), np.float32)])
    attrs, positions = layout.training_layout(jnp.asarray(clip_ids)[None], s)
    apply = jax.jit(VideoGPT(cfg).apply)
    x1 = apply(
        _variables(params),
        _to_model(noisy),
        _to_model(clean),
        jnp.asarray(t, jnp.float32)[None],
        attrs,
        positions,
    )
    return _from_model(x1)


def _batch1(tree):
    """Adds a batch axis of 1 to every array of ``tree``."""
    return jax.tree.map(lambda x: x[None], tree)


def _stack(first: TokenAttrs, second: TokenAttrs) -> TokenAttrs:
    return TokenAttrs(*(jnp.stack([a, b]) for a, b in zip(first, second, strict=True)))


def predict_x1_cfg(
    config: ml_collections.ConfigDict, params, history: np.ndarray, noisy: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """One model evaluation of the sampler, through the KV-cached path.

    history: [n, C, h, w] clean latents (frames 0…n−1); noisy: [g, C, h, w] the clip at time ``t``.
    Returns (conditional, history-free) x1 predictions, [g, C, h, w] each: the clip at frames
    n…n+g−1 after the history, and the same clip alone at frames 0…g−1 (spec §4.4).
    """
    cfg = model_config(config)
    history, noisy = np.asarray(history), np.asarray(noisy)
    s = _tokens_per_frame(cfg, "noisy", noisy)
    _check_shape("history", history, (history.shape[0], *noisy.shape[1:]))
    if history.shape[0] < 1:
        raise ValueError("history has no frames: the conditional prediction needs at least one")
    n, g = history.shape[0], noisy.shape[0]
    model = VideoGPT(cfg)
    variables = _variables(params)
    hist_attrs, hist_pos = layout.history_layout(n, s)
    prefill = jax.jit(functools.partial(model.apply, method=VideoGPT.prefill))
    prefix = prefill(variables, _to_model(history), _batch1(hist_attrs), _batch1(hist_pos))
    # As the sampler: both rows in one call against the batch-1 cache; for the history-free row
    # every cached key is marked pad, so it sees none of them.
    prefix_attrs = _stack(hist_attrs, hist_attrs._replace(is_pad=jnp.ones_like(hist_attrs.is_pad)))
    cond_attrs, cond_pos = layout.generation_layout(n, g, s)
    free_attrs, free_pos = layout.generation_layout(0, g, s)
    denoise = jax.jit(functools.partial(model.apply, method=VideoGPT.denoise))
    z = _to_model(noisy)
    x1 = denoise(
        variables,
        jnp.concatenate([z, z]),
        jnp.full((2, g), t, jnp.float32),
        _stack(cond_attrs, free_attrs),
        jnp.stack([cond_pos, free_pos]),
        prefix,
        prefix_attrs,
    )
    return _from_model(x1[:1]), _from_model(x1[1:])
