"""Clip-tokenizer training: L1 + L2 reconstruction and a KL term, AdamW, one jit step with shardings.

Frames are (N, H, W, C) in [-1, 1]; a batch is split over the data-parallel mesh axes and the
(small, replicated) parameters are updated in place (the state is donated). The step's key is
folded from (seed, step). :func:`train_tokenizer` trains on the frames of a video dataset (any
source ``data_pipelines.pipeline.open_source`` reads), holds its last videos out for the PSNR and
saves the tokenizer as a params checkpoint:

    python -m vgpt_jax.train.tokenizer --config experiments/tokenizer_tiny.py --data DIR --workdir W
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from data_pipelines import transforms, video_io
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.encode_latents import read_frames
from data_pipelines.pipeline import open_source
from vgpt_jax.checkpoint.tokenizer import save_tokenizer
from vgpt_jax.models import clip_tokenizer as ct
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.train.step import (
    StateInit,
    TrainState,
    apply_gradients,
    learning_rate_schedule,
    make_optimizer,
)

TOKENIZER_DIR = "tokenizer"  # under the workdir

# Evaluation draws its posterior samples from the key of a step index no run reaches.
EVAL_STEP = 2**32 - 1


def psnr(reference: jax.Array, estimate: jax.Array) -> jax.Array:
    """Mean over frames of the per-frame PSNR in dB of pixels in [0, 1]. (N, H, W, C) x 2 -> ()."""
    mse = jnp.mean(jnp.square(reference - estimate), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))


def kl_per_element(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, e^logvar) || N(0, 1)) averaged over every latent element. -> ()."""
    return jnp.mean(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))


class TokenizerTrainer(StateInit):
    """The tokenizer, its optimiser, shardings and the jit-compiled init, train step and evaluation."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
        self.config = config
        self.mesh = mesh
        self.axis_rules = config.tokenizer.logical_axis_rules
        self.cfg = ct.TokenizerConfig.from_config(config)
        self.model = ct.AutoencoderKL(self.cfg)
        self.train_config = config.tokenizer.train
        self.optimizer = make_optimizer(config.tokenizer.optim)
        self.data_parallel = dp = mesh_lib.data_parallel_size(mesh)
        if self.train_config.batch_size % dp:
            raise ValueError(
                f"config.tokenizer.train.batch_size = {self.train_config.batch_size} is not allowed: a "
                f"multiple of the data-parallel size (mesh data x fsdp = {dp})"
            )
        with sharding_context(mesh, self.axis_rules):
            abstract = jax.eval_shape(self._init_annotated, jax.random.key(0))
            self.state_shardings = mesh_lib.tree_shardings(mesh, abstract, self.axis_rules)
        self.frames_sharding = mesh_lib.batch_sharding(mesh, 4)
        replicated = mesh_lib.replicated(mesh)
        self._init = jax.jit(self._init_unboxed, out_shardings=self.state_shardings)
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, self.frames_sharding),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )
        self._reconstruct = jax.jit(
            self._reconstruct_fn,
            in_shardings=(self.state_shardings.params, self.frames_sharding, replicated),
            out_shardings=(self.frames_sharding, self.frames_sharding),
        )

    def init_params(self, key: jax.Array):
        """Boxed (logically annotated) tokenizer parameters."""
        return ct.init_params(self.model, key)

    def loss(self, params, frames: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Weighted L1 + L2 of the reconstruction of a posterior sample, plus the weighted KL."""
        recon, mean, logvar = self.model.apply({"params": params}, frames, key)
        err = recon - frames.astype(jnp.float32)
        t = self.train_config
        terms = {
            "l1": jnp.mean(jnp.abs(err)),
            "l2": jnp.mean(jnp.square(err)),
            "kl": kl_per_element(mean, logvar),
        }
        loss = t.l1_weight * terms["l1"] + t.l2_weight * terms["l2"] + t.kl_weight * terms["kl"]
        return loss, terms

    def _train_step(self, state: TrainState, frames: jax.Array):
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, terms), grads = grad_fn(state.params, frames, self.step_key(state.step))
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": learning_rate_schedule(self.config.tokenizer.optim)(state.step),
        }
        return apply_gradients(state, grads, self.optimizer), metrics

    def step(self, state: TrainState, frames: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimiser step on (batch_size, H, W, C) frames; ``state`` is donated."""
        with sharding_context(self.mesh, self.axis_rules):
            return self._step(state, frames)

    def shard(self, frames: np.ndarray) -> jax.Array:
        """Places host frames (global batch) on the mesh, split over the data-parallel axes."""
        ct.check_frames(frames.shape, self.cfg)
        return jax.device_put(jnp.asarray(frames, jnp.float32), self.frames_sharding)

    # -- evaluation -----------------------------------------------------------------------------
    def _reconstruct_fn(self, params, frames: jax.Array, key: jax.Array):
        """Pixels in [0, 1] decoded from the posterior mean and from a sample, chunked like inference.

        Returns (from_mean, from_sample) and the scaled mean latents.
        """
        mean, std = ct.posterior(self.model, params, frames, mesh=self.mesh)
        sample = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        latents = jnp.stack([mean, sample]) * self.cfg.scaling_factor  # one decoder program for both
        pixels = ct.signed_to_unit(ct.decode(self.model, params, latents, mesh=self.mesh))
        return (pixels[0], pixels[1]), latents[0]

    def evaluate(self, params, frames: np.ndarray) -> dict[str, float]:
        """PSNR (dB) of held-out frames decoded from the posterior mean and from a sample.

        Also the std of the scaled mean latents: near 1 when ``scaling_factor`` suits the model.
        """
        x = self.shard(frames)
        with sharding_context(self.mesh, self.axis_rules):
            (from_mean, from_sample), latents = self._reconstruct(params, x, self.step_key(EVAL_STEP))
        target = ct.signed_to_unit(x)
        return {
            "psnr": float(psnr(target, from_mean)),
            "psnr_sample": float(psnr(target, from_sample)),
            "latent_std": float(jnp.std(latents)),
        }


def train(
    trainer: TokenizerTrainer,
    batches: Iterator[np.ndarray],
    steps: int,
    eval_frames: np.ndarray,
    state: TrainState | None = None,
    log: Callable[[str], Any] = print,
) -> tuple[TrainState, dict[str, Any]]:
    """Trains ``steps`` steps on host frame batches, then evaluates on ``eval_frames``.

    Logs one line every ``log_every`` steps (the only host syncs). Returns the state and a summary:
    the evaluation, the per-log-step losses, and the training wall time (compilation included).
    """
    state = trainer.init() if state is None else state
    every = trainer.train_config.log_every
    losses, start = [], time.perf_counter()
    for i in range(steps):
        state, metrics = trainer.step(state, trainer.shard(next(batches)))
        if (i + 1) % every == 0 or i + 1 == steps:
            m = {k: float(v) for k, v in metrics.items()}
            losses.append(m["loss"])
            elapsed = time.perf_counter() - start
            log(
                f"step {i + 1} loss {m['loss']:.5f} l1 {m['l1']:.5f} l2 {m['l2']:.6f} kl {m['kl']:.3f} "
                f"grad_norm {m['grad_norm']:.3f} lr {m['learning_rate']:.2e} "
                f"frames/s {(i + 1) * trainer.train_config.batch_size / elapsed:.1f}"
            )
    train_seconds = time.perf_counter() - start
    summary = {**trainer.evaluate(state.params, eval_frames), "steps": steps, "train_seconds": train_seconds}
    summary["losses"] = losses
    log(
        f"held-out PSNR {summary['psnr']:.2f} dB (posterior mean), {summary['psnr_sample']:.2f} dB "
        f"(sample); latent std {summary['latent_std']:.3f}; {steps} steps in {train_seconds:.1f} s"
    )
    return state, summary


# -- video data ----------------------------------------------------------------------------------


def dataset_frames(
    source, frames_per_video: int, size: int, max_image_size: int, log: Callable[[str], Any] = print
) -> list[np.ndarray]:
    """Per readable video of ``source``: (k, size, size, 3) uint8, ``frames_per_video`` evenly spaced.

    Frames go through crop_arr and into the square bucket as the pixel pipeline brings them;
    unreadable videos are skipped and counted.
    """
    spec = ClipSpec(num_frames=1, max_image_size=max_image_size, height=size, width=size)
    videos, skipped = [], 0
    for i in range(len(source)):
        try:
            videos.append(spec.to_bucket(read_frames(source[i], frames_per_video)))
        except video_io.BadVideoError as e:
            skipped += 1
            log(f"data: skipping unreadable video {e}")
    if skipped:
        log(f"data: {skipped} unreadable videos skipped")
    return videos


def random_batches(frames: np.ndarray, batch: int, seed: int) -> Iterator[np.ndarray]:
    """An endless stream of (batch, H, W, 3) float32 frames in [-1, 1] drawn uniformly from ``frames``."""
    rng = np.random.default_rng(seed)
    while True:
        yield transforms.uint8_to_signed(frames[rng.integers(0, len(frames), batch)])


def train_tokenizer(
    config: ml_collections.ConfigDict, data_dir: str, workdir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Trains ``config.tokenizer`` on the frames of the dataset ``data_dir``; saves it to workdir/tokenizer.

    The last ``eval_videos`` videos are held out for the PSNR. Returns :func:`train`'s summary with
    ``seconds`` (the whole call: reading, compilation, training, evaluation, saving) and the
    tokenizer's folder.
    """
    start = time.perf_counter()
    t = config.tokenizer.train
    source = open_source(data_dir)
    videos = dataset_frames(source, t.frames_per_video, t.frame_size, config.data.max_image_size, log)
    if len(videos) <= t.eval_videos:
        raise ValueError(
            f"{data_dir} has {len(videos)} readable videos: tokenizer training needs more than "
            f"config.tokenizer.train.eval_videos = {t.eval_videos} (they are held out)"
        )
    trainer = TokenizerTrainer(config, mesh_lib.make_mesh(config.mesh))
    train_frames = np.concatenate(videos[: -t.eval_videos])
    held_out = np.concatenate(videos[-t.eval_videos :])
    # evaluation splits the frames over the data-parallel devices like a batch
    held_out = transforms.uint8_to_signed(
        held_out[: len(held_out) // trainer.data_parallel * trainer.data_parallel]
    )
    log(
        f"tokenizer data: {len(train_frames)} frames of {len(videos) - t.eval_videos} videos, "
        f"{len(held_out)} held-out frames of {t.eval_videos} videos"
    )
    batches = random_batches(train_frames, t.batch_size, config.seed)
    state, summary = train(trainer, batches, t.steps, held_out, log=log)
    cfg = trainer.cfg
    if t.fit_scaling_factor:
        # latent_std was measured at the configured scaling: rescale so the held-out latents have std 1
        cfg = dataclasses.replace(cfg, scaling_factor=cfg.scaling_factor / summary["latent_std"])
        config = ml_collections.ConfigDict(config.to_dict())
        config.tokenizer.scaling_factor = cfg.scaling_factor
        log(f"scaling_factor set to {cfg.scaling_factor:.5f} (held-out latent std 1)")
    summary["scaling_factor"] = cfg.scaling_factor
    directory = os.path.join(workdir, TOKENIZER_DIR)
    save_tokenizer(ct.ClipTokenizer(cfg, state.params, trainer.mesh), directory, config)
    summary.update(seconds=time.perf_counter() - start, tokenizer=directory)
    log(f"tokenizer saved to {directory}; {summary['seconds']:.1f} s in all")
    return summary


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "An experiments/*.py file (tokenizer section).")
    _DATA = flags.DEFINE_string("data", None, "A video dataset: a folder of videos, an index .txt, clips.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "The tokenizer is written to WORKDIR/tokenizer.")
    flags.mark_flags_as_required(["config", "data", "workdir"])
    app.run(lambda argv: train_tokenizer(_CONFIG.value, _DATA.value, _WORKDIR.value))
