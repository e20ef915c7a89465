"""Sample videos during training: real vs predicted, side by side, as MP4 and GIF.

At every ``config.train.sample_every`` steps the model predicts the last ``sampling.clip_frames``
frames of a fixed clip (the first training clip this process saw) from the frames before them,
with the inference sampler and settings, and the clip's condition if the run has one. Left half:
the real clip; right half: the context followed by the prediction, both decoded by the tokenizer.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines.video_io import write_gif, write_video
from vgpt_jax.models.video_gpt import model_from_config
from vgpt_jax.sample.sampler import Sampler


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 (rounded)."""
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def side_by_side(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Two (T, H, W, 3) videos -> one (T, H, 2W, 3)."""
    return np.concatenate([real, predicted], axis=2)


class SampleVideos:
    """An ``on_step`` hook of the training loop that writes ``workdir/samples/step_{N}.{mp4,gif}``."""

    def __init__(self, config: ml_collections.ConfigDict, tokenizer, workdir: str):
        self.every = config.train.sample_every
        self.fps = config.train.sample_fps
        self.tokenizer = tokenizer
        self.directory = os.path.join(workdir, "samples")
        self.sampler = Sampler(config, model_from_config(config))
        self.predict_frames = min(config.sampling.clip_frames, config.data.num_frames - 1)
        self.clip = self.condition = None

    def remember(self, batch: dict[str, jax.Array]) -> None:
        """Keeps the first clip of the first batch (target latents) as the one to predict, with
        its condition (a conditioned model never saw frames without a prefix)."""
        if self.clip is None:
            self.clip = batch["target"][:1]
            self.condition = batch["condition"][:1] if "condition" in batch else None

    def __call__(self, step: int, state) -> None:
        if not self.every or step % self.every or self.clip is None:
            return
        context_len = self.clip.shape[1] - self.predict_frames
        predicted = self.sampler.rollout(
            state.params, self.clip[:, :context_len], self.predict_frames, condition=self.condition
        )
        real = self.tokenizer.decode_to_pixels(self.clip[0])
        guessed = self.tokenizer.decode_to_pixels(predicted[0])
        real, guessed = (
            np.asarray(multihost_utils.process_allgather(a, tiled=True)) for a in (real, guessed)
        )
        if jax.process_index() != 0:
            return
        video = side_by_side(to_uint8(real), to_uint8(np.concatenate([real[:context_len], guessed])))
        os.makedirs(self.directory, exist_ok=True)
        stem = os.path.join(self.directory, f"step_{step:08d}")
        write_video(stem + ".mp4", video, self.fps)
        write_gif(stem + ".gif", video, self.fps)
