"""Pipeline batches -> the train step's ``target`` / ``clean`` latents (spec §2: two posterior samples),
and the batch's ``condition`` ids as they are when it has them.

The data pipeline yields either pixel clips (``video`` (B, T, H, W, 3) in [-1, 1]) or cached
posterior moments written by ``data_pipelines.encode_latents`` (``latent_mean`` / ``latent_std``
(B, T, h, w, C), already scaled). Either way the target and the clean conditioning latent of a
frame are two independent samples of its posterior, as the official trainer draws them; the key
is folded from (seed, step), so a resumed run draws the same samples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from data_pipelines.clip_sampler import CONDITION
from data_pipelines.encode_latents import LATENT_MEAN, LATENT_STD

VIDEO = "video"
# a stream of keys of its own: the train step folds (seed, step) for its noise and partitions
_POSTERIOR_STREAM = 0x1A7E


@functools.partial(jax.jit, static_argnames=("scale",))
def posterior_pair(
    mean: jax.Array, std: jax.Array, key: jax.Array, scale: float = 1.0
) -> dict[str, jax.Array]:
    """Two independent samples ``scale * (mean + std * eps)``. mean, std (B, T, h, w, C) -> 2 x same."""
    target_key, clean_key = jax.random.split(key)
    mean, std = mean.astype(jnp.float32), std.astype(jnp.float32)

    def draw(k: jax.Array) -> jax.Array:
        return scale * (mean + std * jax.random.normal(k, mean.shape, jnp.float32))

    return {"target": draw(target_key), "clean": draw(clean_key)}


class TrainInputs:
    """Turns pipeline batches into model inputs; ``tokenizer`` is needed only for pixel batches."""

    def __init__(self, config: ml_collections.ConfigDict, tokenizer=None):
        self.seed = config.seed
        self.tokenizer = tokenizer

    def step_key(self, step: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), _POSTERIOR_STREAM), step)

    def __call__(self, batch: dict[str, jax.Array], step: int) -> dict[str, jax.Array]:
        """``batch`` of global arrays -> {'target', 'clean'} (B, T, h, w, C) for optimiser step
        ``step``, and the batch's ``condition`` (class ids (B,) or text ids (B, P)) if it has one."""
        latents = self._latents(batch, self.step_key(step))
        return {**latents, CONDITION: batch[CONDITION]} if CONDITION in batch else latents

    def _latents(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        if LATENT_MEAN in batch:
            return posterior_pair(batch[LATENT_MEAN], batch[LATENT_STD], key)
        if VIDEO not in batch:
            raise ValueError(
                f"a training batch holds {sorted(batch)}: expected '{VIDEO}' (pixels) or "
                f"'{LATENT_MEAN}'/'{LATENT_STD}' (written by data_pipelines.encode_latents)"
            )
        if self.tokenizer is None:
            raise ValueError("pixel batches need a tokenizer: set config.tokenizer.weights")
        mean, std = self.tokenizer.posterior(batch[VIDEO])
        return posterior_pair(mean, std, key, scale=self.tokenizer.cfg.scaling_factor)
