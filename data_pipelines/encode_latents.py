"""Latent caching: the frozen clip tokenizer run once over a video dataset, written as ArrayRecord latents.

``vgpt encode-latents --config C --output O [--config.data.source_path=D] [--config.tokenizer.weights=T]``

``D`` is any source :func:`data_pipelines.pipeline.open_source` reads (videos, an index, pixel
clips, TFDS); ``T`` anything ``config.tokenizer.weights`` may name ('' = random init); ``C`` the
training run's config (its ``data`` section sets the resolution bucket). Each readable video that
passes the size rules becomes one record of its whole length, brought to the bucket exactly as the
pixel pipeline brings a clip (``ClipSpec.to_bucket``), with per frame::

    latent_mean, latent_std   (T, h, w, C) float32, both already multiplied by scaling_factor

so ``latent_mean + latent_std * eps`` is the online latent (posterior sample x scaling_factor), and
:class:`~data_pipelines.clip_sampler.SampleClip` draws the same frame indices from a record as from
its video. Unreadable videos are skipped and size-rejected ones dropped, both counted in the index's
``meta`` beside the tokenizer's config and scaling.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging
from tqdm import tqdm

from data_pipelines import transforms, video_io
from data_pipelines.array_record_source import ClipRecordWriter, StoredClip
from data_pipelines.clip_sampler import REJECTED, SKIPPED, ClipSpec
from data_pipelines.video_source import VideoRef

LATENT_MEAN, LATENT_STD = "latent_mean", "latent_std"


def spaced_indices(num_frames: int, count: int | None) -> list[int]:
    """Every frame index (count None or >= num_frames), else ``count`` evenly spaced ones."""
    if count is None or count >= num_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


def read_frames(item, count: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a source item (VideoRef or pixel StoredClip): all, or ``count``.

    Raises ``video_io.BadVideoError`` for an unreadable video.
    """
    if isinstance(item, VideoRef):
        num_frames = item.num_frames or video_io.probe(item.path).num_frames
        return video_io.read_frames(item.path, spaced_indices(num_frames, count))
    if isinstance(item, StoredClip) and "video" in item.arrays:
        video = item.arrays["video"]
        return np.asarray(video[spaced_indices(len(video), count)])
    raise TypeError(f"expected a video (VideoRef or a pixel StoredClip), got {type(item).__name__}")


def item_name(item) -> str:
    return item.path if isinstance(item, VideoRef) else str(item.meta.get("name", ""))


def scaled_posterior(tokenizer, frames: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 -> posterior (mean, std) x scaling_factor, 2 x (T, h, w, C) float32.

    Frames go through the tokenizer ``block`` at a time, the last block zero-padded, so one
    compiled program serves every video length.
    """
    x = transforms.uint8_to_signed(frames)
    n = len(x)
    x = np.pad(x, ((0, -n % block), (0, 0), (0, 0), (0, 0)))
    parts = [tokenizer.posterior(x[i : i + block]) for i in range(0, len(x), block)]
    scale = np.float32(tokenizer.cfg.scaling_factor)
    mean = np.concatenate([np.asarray(m) for m, _ in parts])[:n] * scale
    std = np.concatenate([np.asarray(s) for _, s in parts])[:n] * scale
    return mean, std


def encode_dataset(tokenizer, source, out_dir: str, spec: ClipSpec, meta: dict | None = None) -> dict:
    """Writes the latents of every usable video of ``source`` to ``out_dir``; returns the counts."""
    block = tokenizer.cfg.chunk_frames * tokenizer.mesh.size
    counts = {"records": 0, SKIPPED: 0, REJECTED: 0}
    with ClipRecordWriter(out_dir, "latents", meta=meta) as writer:
        for i in tqdm(range(len(source)), desc="encoding latents", unit="video"):
            item = source[i]
            try:
                frames = read_frames(item)
            except video_io.BadVideoError as e:
                counts[SKIPPED] += 1
                logging.warning("data: skipping unreadable video %s", e)
                continue
            height, width = frames.shape[1:3]
            if transforms.size_rejection(width, height, spec.min_side, spec.max_aspect):
                counts[REJECTED] += 1
                continue
            mean, std = scaled_posterior(tokenizer, spec.to_bucket(frames), block)
            writer.write({LATENT_MEAN: mean, LATENT_STD: std}, {"name": item_name(item)})
            counts["records"] += 1
        writer.meta.update(counts)
    if not counts["records"]:
        raise ValueError(
            f"no usable video in {source!r}: {counts[SKIPPED]} unreadable, {counts[REJECTED]} rejected"
        )
    return counts


def tokenizer_meta(tokenizer) -> dict:
    """The tokenizer's hyper-parameters as JSON-able values (dtype by name)."""
    meta = dataclasses.asdict(tokenizer.cfg)
    meta["dtype"] = np.dtype(meta["dtype"]).name
    return meta
