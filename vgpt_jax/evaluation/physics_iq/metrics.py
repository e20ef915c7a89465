"""Physics-IQ per-view metrics (spec §6): one generated view against the two real takes.

Everything is computed at a quarter of the real take-1 video's resolution (cv2 INTER_LINEAR resize,
aspect not preserved). Videos become float64 BGR in [0, 1]; mask videos become uint8 {0, 1} arrays
with 3 identical channels, and every count runs over all h·w·3 values, as in the benchmark. Frames
are streamed, so memory stays at a few frames even for 4K benchmark videos.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from vgpt_jax.evaluation.physics_iq.video import probe, read_frames

METRIC_SCALE = 4  # metrics at (W // 4, H // 4) of the real take-1 video

# The per-view columns of the benchmark's results CSV, in its order. "v1"/"v2": generated video
# against take 1/take 2; "variance": take 1 against take 2 (the physical variance). Lists hold one
# value per frame.
VIEW_METRICS = (
    "v1_mse",
    "v2_mse",
    "variance_spatial",
    "variance_weighted_spatial",
    "variance_spatiotemporal_iou",
    "variance_mse",
    "spatiotemporal_iou_v1",
    "spatiotemporal_iou_v2",
    "spatial_iou_v1",
    "spatial_iou_v2",
    "weighted_spatial_iou_v1",
    "weighted_spatial_iou_v2",
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∧ b| / |a ∨ b| of two same-shape binary arrays; 1.0 when both are empty (spec Q13)."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def weighted_spatial_iou(
    counts_a: np.ndarray, counts_b: np.ndarray, num_frames: int, *, moving_only: bool
) -> float:
    """IoU of how often each value moves: Σ min(Wa, Wb) / Σ max(Wa, Wb), W = counts / num_frames.

    counts_*: uint16 arrays, number of frames in which each value is in the mask. 1.0 when nothing
    moves. `moving_only` sums over the values that move in either (the benchmark's generated-vs-real
    code) or over all values (its take-1-vs-take-2 code): the same number up to float summation
    order, kept so the 4-decimal rounding of the physical variance breaks ties as the benchmark does.
    """
    wa = counts_a / num_frames
    wb = counts_b / num_frames
    smaller, larger = np.minimum(wa, wb), np.maximum(wa, wb)
    moving = larger > 0
    if not moving.any():
        return 1.0
    if moving_only:
        smaller, larger = smaller[moving], larger[moving]
    return float(np.sum(smaller) / np.sum(larger))


def frame_mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two (h, w, 3) frames in [0, 1], computed in float32 (spec Q12)."""
    return float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))


def view_metrics(
    real1: Iterable[np.ndarray],
    real2: Iterable[np.ndarray],
    generated: Iterable[np.ndarray],
    mask1: Iterable[np.ndarray],
    mask2: Iterable[np.ndarray],
    mask_generated: Iterable[np.ndarray],
) -> dict[str, float | list[float]]:
    """The VIEW_METRICS of one view, keyed by name.

    Videos yield (h, w, 3) float frames in [0, 1]; masks yield (h, w, 3) uint8 frames in {0, 1}; all
    six yield the same number of frames (ValueError otherwise).
    """
    per_frame = ("v1_mse", "v2_mse", "variance_mse", "spatiotemporal_iou_v1", "spatiotemporal_iou_v2")
    lists: dict[str, list[float]] = {name: [] for name in (*per_frame, "variance_spatiotemporal_iou")}
    counts1 = counts2 = counts_g = None
    num_frames = 0
    for r1, r2, g, m1, m2, mg in zip(real1, real2, generated, mask1, mask2, mask_generated, strict=True):
        lists["v1_mse"].append(frame_mse(r1, g))
        lists["v2_mse"].append(frame_mse(r2, g))
        lists["variance_mse"].append(frame_mse(r1, r2))
        lists["spatiotemporal_iou_v1"].append(iou(m1, mg))
        lists["spatiotemporal_iou_v2"].append(iou(m2, mg))
        lists["variance_spatiotemporal_iou"].append(iou(m1, m2))
        if counts1 is None:
            counts1, counts2, counts_g = (np.zeros(m1.shape, np.uint16) for _ in range(3))
        counts1 += m1
        counts2 += m2
        counts_g += mg
        num_frames += 1
    if num_frames == 0:
        raise ValueError("no frames to compare")
    moved1, moved2, moved_g = counts1 > 0, counts2 > 0, counts_g > 0  # "spatial" masks: moves at all
    return {
        "v1_mse": lists["v1_mse"],
        "v2_mse": lists["v2_mse"],
        "variance_spatial": iou(moved1, moved2),
        "variance_weighted_spatial": weighted_spatial_iou(counts1, counts2, num_frames, moving_only=False),
        "variance_spatiotemporal_iou": lists["variance_spatiotemporal_iou"],
        "variance_mse": lists["variance_mse"],
        "spatiotemporal_iou_v1": lists["spatiotemporal_iou_v1"],
        "spatiotemporal_iou_v2": lists["spatiotemporal_iou_v2"],
        "spatial_iou_v1": iou(moved1, moved_g),
        "spatial_iou_v2": iou(moved2, moved_g),
        "weighted_spatial_iou_v1": weighted_spatial_iou(counts1, counts_g, num_frames, moving_only=True),
        "weighted_spatial_iou_v2": weighted_spatial_iou(counts2, counts_g, num_frames, moving_only=True),
    }


def metric_frames(path: Path, size: tuple[int, int], num_frames: int) -> Iterator[np.ndarray]:
    """The first `num_frames` frames of a video, resized to `size` (w, h): (h, w, 3) float64 in [0, 1]."""
    for frame in read_frames(path, num_frames):
        yield cv2.resize(frame, size) / 255.0


def metric_masks(path: Path, size: tuple[int, int], num_frames: int) -> Iterator[np.ndarray]:
    """The first `num_frames` frames of a mask video, resized to `size` (w, h): (h, w, 3) uint8 {0, 1}."""
    for frame in read_frames(path, num_frames):
        yield (cv2.resize(frame, size) > 127).astype(np.uint8)


def case_metrics(
    real1: Path,
    real2: Path,
    generated: Path,
    mask1: Path,
    mask2: Path,
    mask_generated: Path,
    num_frames: int,
) -> dict[str, float | list[float]]:
    """view_metrics of one test case from its video files, over the first `num_frames` frames."""
    info = probe(real1)
    size = (info.width // METRIC_SCALE, info.height // METRIC_SCALE)
    return view_metrics(
        metric_frames(real1, size, num_frames),
        metric_frames(real2, size, num_frames),
        metric_frames(generated, size, num_frames),
        metric_masks(mask1, size, num_frames),
        metric_masks(mask2, size, num_frames),
        metric_masks(mask_generated, size, num_frames),
    )
