"""`vgpt physics-iq generate`: a checkpoint's videos for the Physics-IQ test cases, video to video.

For every take-1 test case of descriptions.csv, the model sees the last ``cond_frames`` frames of
its 3 s conditioning video at F fps (default: all 3·F) and predicts exactly 5 s (5·F frames),
which are resized back to the conditioning video's size and written as
``{ID}_{view}_{scenario}.mp4`` at F fps (5.000 s). That is the paper's setting (v2v); the
benchmark scores the 5 s after the switch frame.

Every input is checked before the model is loaded. The run is resumable: a finished video
(written complete, then renamed) is skipped; a video of the wrong length or fps, or one whose ID
is unknown or repeated, stops the run with the file named.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from data_pipelines.video_io import probe_video, read_video, write_mp4
from vgpt_jax.evaluation.physics_iq.layout import (
    CONDITIONING_SECONDS,
    DOWNLOAD_HINT,
    EVAL_SECONDS,
    RealVideo,
    find_descriptions,
    find_generated,
    split_dir,
    take_one_videos,
)
from vgpt_jax.sample.predict import Predictor


@dataclasses.dataclass(frozen=True)
class Job:
    """One test case to generate."""

    video: RealVideo  # the take-1 video
    conditioning: Path  # its conditioning video at the run's fps
    output: Path  # the generated video to write


def _conditioning_dir(data_dir: Path, fps: int) -> Path:
    """split-videos/conditioning/{fps}FPS; FileNotFoundError naming the fps folders present if missing."""
    folder = split_dir(data_dir, "conditioning", fps)
    if not folder.is_dir():
        present = sorted(p.name for p in folder.parent.glob("*FPS")) if folder.parent.is_dir() else []
        raise FileNotFoundError(
            f"{folder} does not exist, so there is no conditioning video at {fps} fps: {DOWNLOAD_HINT}, "
            f"or pass an --fps that {data_dir} has ({', '.join(present) or 'none'})"
        )
    return folder


def _check_conditioning(path: Path, fps: int, cond_frames: int) -> None:
    """A conditioning video exists, decodes, plays at ``fps`` and has at least ``cond_frames`` frames."""
    if not path.is_file():
        raise FileNotFoundError(f"the conditioning video {path} is missing: {DOWNLOAD_HINT}")
    info = probe_video(path)
    if abs(info.fps - fps) > 1e-3:
        raise ValueError(
            f"{path} plays at {info.fps:g} fps, not the --fps {fps} of its folder: download the "
            f"conditioning videos again ({DOWNLOAD_HINT})"
        )
    if info.num_frames < cond_frames:
        raise ValueError(
            f"{path} has {info.num_frames} frames, fewer than the {cond_frames} conditioning frames asked "
            f"for: pass --cond-frames {info.num_frames} or less, or download the video again"
        )


def _finished(path: Path, fps: int) -> bool:
    """Whether ``path`` is a finished video of this run (exactly 5 s at ``fps``); False if absent.

    ValueError if it exists with another length or fps: it is not this run's, so it is neither
    kept (it would be scored) nor overwritten (it may be someone's result).
    """
    if not path.exists():
        return False
    info = probe_video(path)
    expected = EVAL_SECONDS * fps
    if info.num_frames != expected or abs(info.fps - fps) > 1e-3:
        raise ValueError(
            f"{path} has {info.num_frames} frames at {info.fps:g} fps, not this run's {expected} frames "
            f"(5.000 s) at {fps} fps: delete it, or pass another --output-dir"
        )
    return True


def _check_existing_ids(output_dir: Path, jobs: Sequence[Job]) -> None:
    """Every .mp4 already in ``output_dir`` is the video of one test case, under that case's name."""
    if not output_dir.is_dir() or not any(output_dir.glob("*.mp4")):
        return
    expected = {job.video.id: job.output for job in jobs}
    for case_id, path in find_generated(output_dir, set(expected)).items():  # unknown or repeated IDs
        if path != expected[case_id]:
            raise ValueError(
                f"{path} is a video for test case {case_id}, which this run writes as "
                f"{expected[case_id].name}: delete or rename it, or pass another --output-dir"
            )


def plan(
    data_dir: Path, output_dir: Path, fps: int, cond_frames: int, descriptions: Path | None = None
) -> tuple[list[Job], list[Job]]:
    """(to generate, already finished) for every take-1 test case; checks all inputs first.

    Raises FileNotFoundError/ValueError naming the file and the fix.
    """
    if fps < 1:
        raise ValueError(
            f"--fps {fps} is not allowed: give the integer fps of a benchmark folder (8, 16, 24, 30)"
        )
    if not 1 <= cond_frames <= CONDITIONING_SECONDS * fps:
        raise ValueError(
            f"--cond-frames {cond_frames} is not allowed: the conditioning videos hold "
            f"{CONDITIONING_SECONDS * fps} frames at {fps} fps; give 1 to {CONDITIONING_SECONDS * fps}"
        )
    if not data_dir.is_dir():
        raise FileNotFoundError(f"the Physics-IQ data folder {data_dir} does not exist: {DOWNLOAD_HINT}")
    videos = take_one_videos(find_descriptions(data_dir, descriptions))
    folder = _conditioning_dir(data_dir, fps)
    jobs = [Job(v, folder / v.conditioning_name(fps), output_dir / v.generated_name) for v in videos]
    for job in jobs:
        _check_conditioning(job.conditioning, fps, cond_frames)
    _check_existing_ids(output_dir, jobs)
    finished = [job for job in jobs if _finished(job.output, fps)]
    return [job for job in jobs if job not in finished], finished


def read_conditioning(path: Path, cond_frames: int) -> np.ndarray:
    """The last ``cond_frames`` frames of a conditioning video: (cond_frames, H, W, 3) uint8 RGB."""
    total = probe_video(path).num_frames
    return read_video(path, range(total - cond_frames, total))


def generate(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    fps: int,
    cond_frames: int | None = None,
    descriptions: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    **sampling,
) -> dict:
    """Writes the generated video of every take-1 test case that ``output_dir`` does not hold yet.

    Args:
      checkpoint: a training workdir or a `vgpt export` folder.
      data_dir: the physics-IQ-benchmark folder (official layout).
      output_dir: where `{ID}_{view}_{scenario}.mp4` go (created if missing).
      fps: the benchmark fps folder to condition on and to write at.
      cond_frames: conditioning frames (the last ones of the 3 s video); default all 3·fps.
      descriptions: the benchmark's descriptions.csv; default: see ``layout.find_descriptions``.
      overrides, sampling: fields that replace the checkpoint's own config (``FIELD=VALUE``), and
        config.sampling fields by name (steps, cfg_scale, clip_frames, window_frames, seed).

    Returns:
      {"generated": n, "skipped": n (finished before), "output_dir": str}.
    """
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    cond_frames = CONDITIONING_SECONDS * fps if cond_frames is None else cond_frames
    descriptions = None if descriptions is None else Path(descriptions)
    todo, finished = plan(data_dir, output_dir, fps, cond_frames, descriptions)
    if todo:
        output_dir.mkdir(parents=True, exist_ok=True)
        predictor = Predictor.from_checkpoint(checkpoint, overrides=overrides, **sampling)
        total = len(todo) + len(finished)
        with tqdm(total=total, initial=len(finished), desc="Physics-IQ generate", unit="video") as bar:
            for start in range(0, len(todo), predictor.batch_size):
                batch = todo[start : start + predictor.batch_size]
                videos = [read_conditioning(job.conditioning, cond_frames) for job in batch]
                predicted = predictor.predict(videos, EVAL_SECONDS * fps)
                if jax.process_index() == 0:  # every process samples, one writes
                    for job, frames in zip(batch, predicted, strict=True):
                        write_mp4(job.output, frames, fps)
                bar.update(len(batch))
    return {"generated": len(todo), "skipped": len(finished), "output_dir": str(output_dir)}
