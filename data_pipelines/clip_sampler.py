"""One training clip per record: the official sampling with rejection and deterministic redraws.

:class:`SampleClip` is a Grain ``RandomMap``: Grain hands it the source item of the record it
drew and a NumPy generator seeded from (loader seed, record index), so the result depends on
nothing else and a resumed iterator reproduces it. When a video is rejected by a rule (side <
128, aspect > 4, too short) or cannot be read (corrupt, truncated, zero-length, unsupported), the
same generator draws another source index, as the official loader draws another random video.
Draws are bounded by ``max_draws``; every output says how many videos it skipped and rejected on
the way, so counts survive Grain's worker processes and reach the training loop.
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import transforms, video_io
from data_pipelines.array_record_source import StoredClip
from data_pipelines.labelled_source import LabelledVideo
from data_pipelines.video_source import VideoRef

SKIPPED = "skipped"  # output counters (int32 scalars per clip): unreadable files met on the way
REJECTED = "rejected"  # videos refused by a rule on the way
COUNTERS = (SKIPPED, REJECTED)
# a labelled video's condition: its text's ids ((P,) int32, -1 pads), else its class label (int32 scalar)
CONDITION = "condition"


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What one clip is: N frames at an interval, resized like the official crop_arr, in one bucket.

    ``height``/``width`` (pixels) set the resolution bucket every clip is brought to (see
    :func:`transforms.fit_to_bucket`); None keeps crop_arr's size (then clips of one batch must
    agree). Latent records are sampled along their frame axis only.
    """

    num_frames: int
    interval: int = 4
    flexible: bool = False
    max_interval: int = 12
    max_image_size: int = 320
    height: int | None = None
    width: int | None = None
    min_side: int = transforms.MIN_SIDE
    max_aspect: float = transforms.MAX_ASPECT
    max_draws: int = 64

    @classmethod
    def from_config(cls, data: ml_collections.ConfigDict, downsample: int = 8, **overrides) -> ClipSpec:
        """From ``config.data``; the bucket is the latent size times the tokenizer's ``downsample``."""
        return cls(
            num_frames=data.num_frames,
            interval=data.frame_interval,
            flexible=data.flexible_interval,
            max_interval=data.max_interval,
            max_image_size=data.max_image_size,
            height=data.latent_height * downsample,
            width=data.latent_width * downsample,
            **overrides,
        )

    def to_bucket(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 -> crop_arr'd frames, brought to the bucket when one is set."""
        frames = np.stack([transforms.crop_arr(f, self.max_image_size) for f in frames])
        if self.height is None:
            return frames
        return transforms.fit_to_bucket(frames, self.height, self.width)


class _RejectedError(Exception):
    pass


def _condition(video: LabelledVideo) -> np.ndarray | None:
    """The text ids (P,) int32 when the source tokenized the video's text, else the class label
    () int32, else None: a run tokenizes texts only when it is text-conditioned."""
    if video.text_ids is not None:
        return np.asarray(video.text_ids, np.int32)
    return None if video.label is None else np.int32(video.label)


class SampleClip(grain.transforms.RandomMap):
    """Source item -> ``{"video": (N, H, W, 3) uint8, "skipped": int32, "rejected": int32}``.

    Latent records give their own fields, each (N, ...) along the frame axis, instead of ``video``.
    A labelled video with text ids or a class label adds ``condition``: its text ids (P,) int32 if
    it has them, else its label, int32 (always the condition of the video drawn, a redraw's if it
    came to one).
    """

    def __init__(self, source, spec: ClipSpec):
        self.source, self.spec = source, spec
        # Files already reported by this process. Only the warning is deduplicated: a bad file is
        # opened again when drawn again, so draws never depend on what a worker saw before.
        self._reported: set[str] = set()

    def random_map(self, element, rng: np.random.Generator) -> dict[str, np.ndarray]:
        skipped = rejected = 0
        last = ""
        for _ in range(self.spec.max_draws):
            try:
                clip = self._clip(element, rng)
                return {**clip, SKIPPED: np.int32(skipped), REJECTED: np.int32(rejected)}
            except video_io.BadVideoError as e:
                skipped += 1
                last = str(e)
                if e.path not in self._reported:
                    self._reported.add(e.path)
                    logging.warning("data: skipping unreadable video %s", e)
            except _RejectedError as e:
                rejected += 1
                last = str(e)
            element = self.source[int(rng.integers(len(self.source)))]
        raise RuntimeError(
            f"no usable clip after {self.spec.max_draws} draws from {self.source!r}: {skipped} unreadable, "
            f"{rejected} rejected by the rules (last: {last}); most of the dataset is unusable for "
            f"{self.spec}: check the files or relax the rules"
        )

    def _clip(self, element, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if isinstance(element, LabelledVideo) and (condition := _condition(element)) is not None:
            return {"video": self._video_file(element, rng), CONDITION: condition}
        if isinstance(element, VideoRef):
            return {"video": self._video_file(element, rng)}
        if isinstance(element, StoredClip):
            if "video" in element.arrays:
                return {"video": self._stored_pixels(element, rng)}
            indices = self._indices(element.num_frames, rng, what="stored latents")
            return {name: np.asarray(a[indices]) for name, a in element.arrays.items()}
        raise TypeError(f"source items must be VideoRef or StoredClip, got {type(element).__name__}")

    def _video_file(self, ref: VideoRef, rng: np.random.Generator) -> np.ndarray:
        info = video_io.probe(ref.path)
        self._check_size(info.width, info.height, ref.path)
        indices = self._indices(ref.num_frames or info.num_frames, rng, what=ref.path)
        return self.spec.to_bucket(video_io.read_frames(ref.path, indices.tolist()))

    def _stored_pixels(self, clip: StoredClip, rng: np.random.Generator) -> np.ndarray:
        video = clip.arrays["video"]
        self._check_size(video.shape[2], video.shape[1], "stored clip")
        return self.spec.to_bucket(video[self._indices(len(video), rng, what="stored clip")])

    def _check_size(self, width: int, height: int, what: str) -> None:
        reason = transforms.size_rejection(width, height, self.spec.min_side, self.spec.max_aspect)
        if reason:
            raise _RejectedError(f"{what}: {reason}")

    def _indices(self, num_source_frames: int, rng: np.random.Generator, what: str) -> np.ndarray:
        s = self.spec
        indices = transforms.frame_indices(
            rng, num_source_frames, s.num_frames, s.interval, s.flexible, s.max_interval
        )
        if indices is None:
            raise _RejectedError(
                f"{what}: {num_source_frames} frames are too short for {s.num_frames} frames"
            )
        return indices
