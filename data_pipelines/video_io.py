"""Video files through PyAV: probe, decode only the frames a clip needs, and write MP4 and GIF.

Every failure of a file (missing, zero length, corrupt, truncated, no video stream, unsupported
codec) surfaces as :class:`BadVideoError`, so callers can skip and count it with one ``except``.
Frame ``i`` is the i-th frame in presentation order, found from timestamps: ``round((pts - start)
* time_base * fps)``, which is exact for the constant-frame-rate videos of training sets.

:func:`probe_video` and :func:`read_video` are the same reads for a user's own file, where a bad
video is the user's to fix: they raise FileNotFoundError / ValueError with the fix instead.
:func:`write_mp4` writes a finished video atomically; :func:`write_gif` a looping preview.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# Needed frames further apart than this are reached by a new seek rather than by decoding the gap
# (about two GOPs of common encoders at 30 fps).
RESEEK_GAP = 120
PARTIAL_DIR = ".partial"  # videos being written, beside the finished ones
# Shown with every "cannot decode" error: the fix that works for any input the user may have.
REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`"


class BadVideoError(Exception):
    """A video file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    num_frames: int
    fps: float


def _open(path: str):
    if not os.path.isfile(path):
        raise BadVideoError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise BadVideoError(path, "zero-length file")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise BadVideoError(path, f"cannot open: {e}") from e
    if not container.streams.video:
        container.close()
        raise BadVideoError(path, "no video stream")
    return container


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise BadVideoError(stream.container.name, "unknown frame rate")
    return Fraction(rate)


def probe(path: str) -> VideoInfo:
    """Size, frame count and frame rate from the container; counts packets when the header has no count."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise BadVideoError(path, "video stream without a frame size")
        num_frames = stream.frames
        if num_frames <= 0:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        if num_frames <= 0:
            raise BadVideoError(path, "video stream has no frames")
        return VideoInfo(width, height, int(num_frames), float(_rate(stream)))
    except av.FFmpegError as e:
        raise BadVideoError(path, f"cannot read the stream: {e}") from e
    finally:
        container.close()


def _runs(indices: Sequence[int]) -> list[list[int]]:
    """Sorted unique indices split where consecutive ones are more than RESEEK_GAP apart."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i - runs[-1][-1] <= RESEEK_GAP:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def read_frames(path: str, indices: Sequence[int]) -> np.ndarray:
    """RGB frames at ``indices`` (any order, repeats allowed): (len(indices), H, W, 3) uint8.

    Seeks to the keyframe before each run of nearby indices and decodes forward, converting only
    the frames asked for. A frame that cannot be reached raises :class:`BadVideoError` (truncated).
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        got = {}
        for run in _runs(indices):
            got.update(_decode_run(container, stream, run))
        missing = sorted(set(indices) - set(got))
        if missing:
            raise BadVideoError(path, f"truncated: frames {missing[:4]} (of {len(missing)} asked) not found")
        return np.stack([got[i] for i in indices])
    except av.FFmpegError as e:
        raise BadVideoError(path, f"decode error: {e}") from e
    finally:
        container.close()


def _decode_run(container, stream, run: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at the sorted indices ``run``, decoded from the keyframe before the first one."""
    frames = _decode_from(container, stream, run, seek_to=run[0])
    if frames is None:  # the container's index put the seek past the first frame: start over
        frames = _decode_from(container, stream, run, seek_to=0)
    return frames or {}


def _decode_from(container, stream, run: list[int], seek_to: int) -> dict[int, np.ndarray] | None:
    """Frames of ``run`` found after seeking to frame ``seek_to``; None if decoding began past run[0]."""
    rate, time_base = _rate(stream), stream.time_base
    start_pts = stream.start_time or 0
    container.seek(start_pts + int(Fraction(seek_to) / rate / time_base), stream=stream, backward=True)
    wanted, out = set(run), {}
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        index = round((frame.pts - start_pts) * time_base * rate)
        if not out and index > run[0]:
            return None
        if index in wanted:
            out[index] = frame.to_ndarray(format="rgb24")
        if index >= run[-1]:
            break
    return out


def write_video(
    path: str,
    frames: Iterable[np.ndarray],
    fps: int,
    codec: str = "libx264",
    crf: int = 18,
) -> int:
    """Writes RGB uint8 frames (H, W, 3), H and W even, as an MP4 at ``fps``; returns the frame count.

    Timestamps are frame numbers at time base 1/fps, so N frames last exactly N / fps seconds.
    """
    count = 0
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1  # tiny frames: thread start-up costs more than it saves
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame count and fps of a video; FileNotFoundError/ValueError naming it when unusable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the video {path} does not exist")
    try:
        return probe(str(path))
    except BadVideoError as error:
        raise ValueError(f"cannot decode the video {error}: {REENCODE_HINT}") from None


def read_video(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices``: (len(indices), H, W, 3) uint8 RGB; ValueError naming the file if unreadable."""
    try:
        return read_frames(str(path), indices)
    except BadVideoError as error:
        raise ValueError(f"cannot decode the video {error}: {REENCODE_HINT}") from None


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """Writes (T, H, W, 3) uint8 RGB as an H.264 MP4 of exactly T frames lasting T / fps seconds.

    The file appears under its name only once complete (written in ``.partial/`` beside it, then
    renamed), so an interrupted run never leaves a truncated video that looks finished, nor a stray
    ``.mp4`` among the finished ones. Odd sides lose their last row/column: yuv420p needs even ones.
    """
    path = Path(path)
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    partial = path.parent / PARTIAL_DIR / path.name
    partial.parent.mkdir(exist_ok=True)
    written = write_video(str(partial), frames[:, :height, :width], fps)
    if written != len(frames):  # write_video counts what it encoded; a mismatch is a bug, not input
        raise RuntimeError(f"wrote {written} of {len(frames)} frames to {partial}")
    os.replace(partial, path)
    with contextlib.suppress(OSError):  # kept while other videos are being written
        partial.parent.rmdir()


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """(T, H, W, 3) uint8 -> an endlessly looping GIF at ``fps``."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
