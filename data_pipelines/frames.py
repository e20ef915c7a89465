"""Frame batches for the clip tokenizer: the video pipeline's clips, a few frames each, as frames.

The tokenizer works on single frames, but decoding a video for one frame wastes the decode: each
sample is ``frames_per_sample`` frames, ``frame_interval`` apart, from a random place in a random
video (the training clip sampler's draws, redraws and checkpointable state), and a batch of
``batch_size`` frames holds ``batch_size / frames_per_sample`` such samples. The last
``eval_videos`` videos of the source are held out of training for the held-out PSNR.
"""

from __future__ import annotations

import ml_collections
from jax.sharding import Mesh

from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.pipeline import GlobalBatchIterator, make_pipeline
from vgpt_jax.parallel.mesh import data_parallel_size


class SourceRange:
    """Records ``[start, stop)`` of a random-access source, as a source."""

    def __init__(self, source, start: int, stop: int):
        if not 0 <= start < stop <= len(source):
            raise ValueError(
                f"records [{start}, {stop}) are not a non-empty range of {source!r} ({len(source)})"
            )
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.source[self.start + index]

    def __repr__(self) -> str:
        return f"{self.source!r}[{self.start}:{self.stop}]"


def split_held_out(source, eval_videos: int) -> tuple[SourceRange, SourceRange]:
    """(training records, the last ``eval_videos`` records); ValueError when nothing is left to train on."""
    if len(source) <= eval_videos:
        raise ValueError(
            f"{source!r} has {len(source)} videos: tokenizer training needs more than "
            f"config.tokenizer.train.eval_videos = {eval_videos} (they are held out)"
        )
    return SourceRange(source, 0, len(source) - eval_videos), SourceRange(
        source, len(source) - eval_videos, len(source)
    )


def frame_spec(config: ml_collections.ConfigDict) -> ClipSpec:
    """One training sample of ``config.tokenizer.train``: square frames of ``frame_size``.

    No size rule: the tokenizer learns pixels, whatever the videos' size (the Video-GPT data's
    ``min_side`` filter is about clips worth predicting).
    """
    t = config.tokenizer.train
    return ClipSpec(
        num_frames=t.frames_per_sample,
        interval=t.frame_interval,
        max_image_size=config.data.max_image_size,
        height=t.frame_size,
        width=t.frame_size,
        min_side=1,
    )


def samples_per_device(config: ml_collections.ConfigDict, mesh: Mesh) -> int:
    """Samples per data-parallel shard in a step of ``tokenizer.train.batch_size`` frames."""
    t = config.tokenizer.train
    samples, shards = t.batch_size // t.frames_per_sample, data_parallel_size(mesh)
    if samples % shards:
        raise ValueError(
            f"config.tokenizer.train.batch_size = {t.batch_size} is not allowed: its "
            f"{samples} samples of frames_per_sample = {t.frames_per_sample} frames must split over the "
            f"data-parallel size (mesh data x fsdp = {shards}); use a multiple of "
            f"{t.frames_per_sample * shards}"
        )
    return samples // shards


def make_frame_pipeline(config: ml_collections.ConfigDict, mesh: Mesh, source) -> GlobalBatchIterator:
    """Global batches ``{"video": (samples, frames_per_sample, S, S, 3)}`` in [-1, 1] on the mesh."""
    return make_pipeline(
        config,
        mesh,
        source,
        spec=frame_spec(config),
        per_device_batch_size=samples_per_device(config, mesh),
        worker_count=config.data.worker_count,
        worker_buffer_size=config.data.worker_buffer_size,
    )
