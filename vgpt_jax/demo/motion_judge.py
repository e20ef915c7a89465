"""The motion world's judge, without a model: which way a video's change moves.

The motion world (:data:`vgpt_jax.demo.physics_scenes.MOTIONS`) shows one large ball gliding over a
still room, so what changes between two frames is the ball's leading and trailing edges, whose
centroid (weighted by the size of the change) sits near the ball. The least-squares slope of that
centroid over time is the ball's velocity; the judged class is the direction of
:data:`~vgpt_jax.demo.physics_scenes.MOTIONS` closest to it. Flicker spread over the frame draws the
centroid towards the middle, which shortens the slope but does not turn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipelines import video_io
from data_pipelines.labelled_source import read_manifest
from vgpt_jax.demo.physics_scenes import MOTIONS

STILL = -1  # the verdict on a video without change: no class


def change_centroids(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, C) frames -> the centroid (T-1, 2) in pixels as (column, row) and the mass
    (T-1,) of the absolute change between consecutive frames (summed over channels); a centroid of
    no change is 0."""
    change = np.abs(np.diff(frames.astype(np.float64), axis=0)).sum(axis=-1)  # (T-1, H, W)
    mass = change.sum(axis=(1, 2))
    rows, cols = np.indices(change.shape[1:]) + 0.5  # pixel centres
    weighted = np.stack([(change * cols).sum(axis=(1, 2)), (change * rows).sum(axis=(1, 2))], -1)
    return weighted / np.maximum(mass, 1e-12)[:, None], mass


def velocity(frames: np.ndarray) -> np.ndarray | None:
    """(T, H, W, C) frames -> (2,) pixels a frame (columns right, rows down): the mass-weighted
    least-squares slope of the change centroids over time; None when fewer than two frame pairs
    change."""
    centroids, mass = change_centroids(frames)
    if np.count_nonzero(mass) < 2:
        return None
    t = np.arange(len(mass), dtype=np.float64)
    t_mean = np.average(t, weights=mass)
    c_mean = np.average(centroids, axis=0, weights=mass)
    spread = (t - t_mean)[:, None]
    return (mass[:, None] * spread * (centroids - c_mean)).sum(0) / (mass[:, None] * spread**2).sum()


def judge_direction(frames: np.ndarray) -> int:
    """(T, H, W, C) frames -> the index in :data:`MOTIONS` of the direction closest to their
    :func:`velocity`, or :data:`STILL`."""
    v = velocity(frames)
    if v is None:
        return STILL
    return int(np.argmax(np.asarray(list(MOTIONS.values()), np.float64) @ v))


def judge_manifest(manifest: Path, frames: range) -> tuple[np.ndarray, np.ndarray]:
    """(verdicts, labels), (N,) each, of a labelled manifest's videos read at ``frames``."""
    videos = read_manifest(str(manifest)).videos
    verdicts = [judge_direction(video_io.read_frames(video.path, frames)) for video in videos]
    return np.asarray(verdicts), np.asarray([video.label for video in videos])
