"""Clip-tokenizer training: L1 + L2 reconstruction and a KL term, AdamW, one jit step with shardings.

Frames are (N, H, W, C) in [-1, 1]; a batch is split over the data-parallel mesh axes and the
(small, replicated) parameters are updated in place (the state is donated). The step's key is
folded from (seed, step). :func:`train_tokenizer` trains through the shared training loop
(``train/loop.py``: checkpoints with the data iterator, exact resume, preemption save, NaN stop,
metrics and TensorBoard) on frames of a video dataset (any source ``data_pipelines.pipeline.
open_source`` reads), evaluates the PSNR of held-out videos, and saves the tokenizer as a params
checkpoint (``vgpt train-tokenizer``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import flax.linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from data_pipelines import transforms, video_io
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.encode_latents import read_frames
from data_pipelines.frames import frame_spec, make_frame_pipeline, samples_per_device, split_held_out
from data_pipelines.pipeline import open_source
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.tokenizer import save_tokenizer, tokenizer_from_weights
from vgpt_jax.models import clip_tokenizer as ct
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.train import loop, preflight
from vgpt_jax.train.step import (
    StateInit,
    TrainState,
    apply_gradients,
    finiteness,
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
    """The tokenizer, its optimiser, shardings and the jit-compiled init, train step and evaluation
    (a :class:`~vgpt_jax.train.loop.LoopTrainer`).

    Batches are ``{"video": (samples, frames_per_sample, H, W, C)}`` in [-1, 1]: each sample's
    frames join the batch of frames.
    """

    STATE_SECTIONS = ("tokenizer.",)
    OPTIM_SECTION = "tokenizer.optim"

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
        self.config = config
        self.mesh = mesh
        self.axis_rules = config.tokenizer.logical_axis_rules
        self.cfg = ct.TokenizerConfig.from_config(config)
        self.model = ct.AutoencoderKL(self.cfg)
        self.train_config = config.tokenizer.train
        self.optimizer = make_optimizer(config.tokenizer.optim)
        self.data_parallel = mesh_lib.data_parallel_size(mesh)
        samples_per_device(config, mesh)  # the batch must split over the mesh
        with sharding_context(mesh, self.axis_rules):
            abstract = jax.eval_shape(self._init_annotated, jax.random.key(0))
            self.state_shardings = mesh_lib.tree_shardings(mesh, abstract, self.axis_rules)
        self.abstract_state = flax.linen.unbox(abstract)
        self.frames_sharding = mesh_lib.batch_sharding(mesh, 4)
        self.batch_shardings = {"video": mesh_lib.batch_sharding(mesh, 5)}
        replicated = mesh_lib.replicated(mesh)
        self._init = jax.jit(self._init_unboxed, out_shardings=self.state_shardings)
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, self.batch_shardings),
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

    def _train_step(self, state: TrainState, batch: dict[str, jax.Array]):
        frames = batch["video"].reshape(-1, *batch["video"].shape[2:])
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, terms), grads = grad_fn(state.params, frames, self.step_key(state.step))
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": learning_rate_schedule(self.config.tokenizer.optim)(state.step),
        }
        updated = apply_gradients(state, grads, self.optimizer)
        return updated, {**metrics, **finiteness(loss, updated, batch)}

    def initial_state(self, log: Callable[[str], None] = print) -> TrainState:
        """Step 0: a fresh state, its parameters those of ``tokenizer.weights`` when set (fine-tuning)."""
        state = self.init()
        if self.config.tokenizer.weights:
            state = state.replace(params=tokenizer_from_weights(self.config, self.mesh).params)
            log(f"initialised the tokenizer from {self.config.tokenizer.weights}")
        return state

    def step_cost(self, state: TrainState, compiled) -> tuple[float, dict[str, float]]:
        """(global FLOPs as XLA counts the compiled step on each device, {"frames": batch_size})."""
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # a list of one on older jax versions
        return float(cost.get("flops", 0.0)) * jax.device_count(), {"frames": self.train_config.batch_size}

    def shard_batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Places a host batch (global shape) on the mesh."""
        video = batch["video"]
        ct.check_frames((video.shape[0] * video.shape[1], *video.shape[2:]), self.cfg)
        return {"video": jax.device_put(jnp.asarray(video, jnp.float32), self.batch_shardings["video"])}

    def shard(self, frames: np.ndarray) -> jax.Array:
        """Places host frames (N, H, W, C) on the mesh, split over the data-parallel axes."""
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


def _held_out_frames(config: ml_collections.ConfigDict, source, data_parallel: int, log) -> np.ndarray:
    """The held-out videos' evenly spaced frames in [-1, 1], as many as split over the devices."""
    t = config.tokenizer.train
    frames = np.concatenate(
        dataset_frames(source, t.frames_per_video, t.frame_size, config.data.max_image_size, log)
    )
    # evaluation splits the frames over the data-parallel devices like a batch
    return transforms.uint8_to_signed(frames[: len(frames) // data_parallel * data_parallel])


def _remove_earlier_tokenizer(directory: str) -> None:
    """An earlier run's tokenizer (the run was resumed to more steps) is replaced, never mixed in;
    the checkpoints keep its state."""
    if jax.process_index() == 0 and os.path.isdir(directory):
        shutil.rmtree(directory)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("removed the earlier tokenizer")


def train_tokenizer(
    config: ml_collections.ConfigDict, data_dir: str, workdir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Trains ``config.tokenizer`` on the frames of the dataset ``data_dir`` in ``workdir`` (resuming
    from its checkpoints); saves the tokenizer to ``workdir/tokenizer``.

    The last ``eval_videos`` videos are held out for the PSNR (every ``eval_every`` steps and at
    the end). Returns the final evaluation with ``steps``, ``losses`` (one per log step),
    ``train_seconds`` (the loop, compilation included), ``seconds`` (the whole call),
    ``scaling_factor`` and ``tokenizer`` (the saved folder). A preempted run saves its checkpoint
    and returns ``{"preempted": True, "steps": ...}`` without a tokenizer: rerun to resume.
    """
    start = time.perf_counter()
    t = config.tokenizer.train
    config = config_lib.with_fields(config, {"data.source_path": data_dir})
    preflight.check_workdir(workdir)
    train_source, held_source = split_held_out(open_source(data_dir), t.eval_videos)
    preflight.check_first_clip(train_source, frame_spec(config), config.seed, f"tokenizer data {data_dir}")
    trainer = TokenizerTrainer(config, mesh_lib.make_mesh(config.mesh))
    held_out = _held_out_frames(config, held_source, trainer.data_parallel, log)
    log(
        f"tokenizer data: samples of {t.frames_per_sample} frames from {len(train_source)} videos, "
        f"{len(held_out)} held-out frames of {t.eval_videos} videos"
    )
    pipeline = make_frame_pipeline(config, trainer.mesh, train_source)

    def evaluate(step: int, state: TrainState) -> dict[str, float] | None:
        if t.eval_every and step % t.eval_every == 0:
            return {f"eval/{k}": v for k, v in trainer.evaluate(state.params, held_out).items()}
        return None

    settings = loop.LoopSettings.from_config(config, t)
    state = loop.train_with(
        trainer, settings, workdir, pipeline, data_iterator=pipeline, log=log, on_step=evaluate
    )
    train_seconds = time.perf_counter() - start
    if int(state.step) < t.steps:
        log(f"preempted at step {int(state.step)} of {t.steps}: rerun the same command to resume")
        return {"preempted": True, "steps": int(state.step)}
    metrics = loop.read_metrics(workdir)
    summary = {
        **trainer.evaluate(state.params, held_out),
        "steps": t.steps,
        "train_seconds": train_seconds,
        "losses": [metrics[step]["loss"] for step in sorted(metrics) if "loss" in metrics[step]],
    }
    log(
        f"held-out PSNR {summary['psnr']:.2f} dB (posterior mean), {summary['psnr_sample']:.2f} dB "
        f"(sample); latent std {summary['latent_std']:.3f}"
    )
    cfg = trainer.cfg
    if t.fit_scaling_factor:
        # latent_std was measured at the configured scaling: rescale so the held-out latents have std 1
        cfg = dataclasses.replace(cfg, scaling_factor=cfg.scaling_factor / summary["latent_std"])
        log(f"scaling_factor set to {cfg.scaling_factor:.5f} (held-out latent std 1)")
    summary["scaling_factor"] = cfg.scaling_factor
    directory = os.path.join(workdir, TOKENIZER_DIR)
    _remove_earlier_tokenizer(directory)
    save_tokenizer(
        ct.ClipTokenizer(cfg, state.params, trainer.mesh), directory, ct.with_weight_fields(config, cfg)
    )
    summary.update(seconds=time.perf_counter() - start, tokenizer=directory)
    log(f"tokenizer saved to {directory}; {summary['seconds']:.1f} s in all")
    return summary
