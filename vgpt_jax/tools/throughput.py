"""Decode throughput of the video pipeline: clips per second through the Grain loader.

One clip is what the training pipeline makes of a video file: 16 frames at interval 4, decoded
with PyAV, resized by crop_arr to 320x176 and batched. The test videos are 16:9 H.264 files with
moving, textured content (a flat image would decode unrealistically fast) at 720p by default,
the common size of web-video training sets.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from data_pipelines import video_io
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.pipeline import make_loader
from data_pipelines.video_source import VideoFileSource


def make_test_videos(
    directory: str,
    num_videos: int = 4,
    width: int = 1280,
    height: int = 720,
    num_frames: int = 64,
    fps: int = 30,
) -> str:
    """Writes ``num_videos`` H.264 files of a noise texture panning over a gradient; returns ``directory``."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for v in range(num_videos):
        texture = rng.integers(0, 256, (height // 8, width // 8 + num_frames, 3), dtype=np.uint8)
        texture = np.repeat(np.repeat(texture, 8, axis=0), 8, axis=1)  # 8x8 blocks: compressible, not flat
        ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        frames = (
            (0.6 * texture[:, 8 * t : 8 * t + width] + 100 * ramp).clip(0, 255).astype(np.uint8)
            for t in range(num_frames)
        )
        video_io.write_video(os.path.join(directory, f"video-{v:03d}.mp4"), frames, fps, crf=23)
    return directory


def decoded_clips_per_second(
    num_workers: int,
    video_dir: str | None = None,
    num_frames: int = 16,
    height: int = 176,
    width: int = 320,
    interval: int = 4,
    seconds: float = 10.0,
) -> float:
    """Clips/s of ``num_frames`` frames at ``height`` x ``width`` decoded by ``num_workers`` processes.

    Uses the videos in ``video_dir`` (default: fresh :func:`make_test_videos` in a temporary folder).
    Worker start-up and the first batch are excluded; then batches of one clip are drawn for
    ``seconds`` of wall time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        source = VideoFileSource(video_dir or make_test_videos(tmp))
        spec = ClipSpec(num_frames=num_frames, interval=interval, height=height, width=width)
        loader = make_loader(
            source, spec, batch_size=1, seed=0, worker_count=num_workers, worker_buffer_size=4
        )
        iterator = iter(loader)
        next(iterator)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            batch = next(iterator)
            count += len(batch["video"])
        return count / (time.perf_counter() - start)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as videos:
        make_test_videos(videos)
        for workers in (1, 4):
            print(
                f"{workers} worker(s): {decoded_clips_per_second(workers, videos):.2f} clips/s (16 x 320x176)"
            )
