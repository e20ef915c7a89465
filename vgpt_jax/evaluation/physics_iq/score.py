"""Scoring a folder of generated videos: masks, metrics and the score, written as the benchmark does.

The numbers equal the official evaluation's (google-deepmind/physics-IQ-benchmark, spec in
PHYSICS_IQ_SPEC.md) for the same videos, with three differences in behaviour only: inputs are never
renamed or written to, every cached mask is keyed by the content it was computed from, and any
subset of the 198 test cases can be scored (the outputs say which, and whether the set is complete).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from vgpt_jax.evaluation.physics_iq.aggregate import physics_iq
from vgpt_jax.evaluation.physics_iq.layout import Case, Inputs, RealVideo, resolve_inputs
from vgpt_jax.evaluation.physics_iq.masks import cache_key, write_mask_video
from vgpt_jax.evaluation.physics_iq.metrics import case_metrics
from vgpt_jax.evaluation.physics_iq.report import plot, write_json, write_results_csv
from vgpt_jax.evaluation.physics_iq.video import probe


def _init_worker() -> None:
    # One OpenCV thread per process: the processes already use every core.
    cv2.setNumThreads(1)


def _run_parallel(function: Callable[..., Any], jobs: Sequence[tuple], workers: int, desc: str) -> list[Any]:
    """[function(*job) for job in jobs] over `workers` processes, with a progress bar."""
    results: list[Any] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc=desc, unit="video") as bar:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i] = function(*job)
                bar.update()
            return results
        # spawn: forking a process that holds OpenCV's thread pool can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=context, initializer=_init_worker
        ) as pool:
            futures = {pool.submit(function, *job): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return results


def _mask_paths(inputs: Inputs, cache_dir: Path, workers: int) -> dict[Path, Path]:
    """Video -> its motion-mask video, for every video whose mask is computed here (not shipped).

    Masks are computed in parallel where the cache lacks them; cache file names carry a key of the
    video's content (spec §9 Q14: the official code reuses stale masks by file name).
    """
    sources: dict[Path, Path] = {}  # video -> cache path before the content key
    for case in inputs.cases:
        stem = Path(case.take1.mask_name(inputs.fps)).stem
        sources[case.generated] = cache_dir / "generated" / stem
        if inputs.shipped_masks_dir is None:
            for video in (case.take1, case.take2):
                testing = inputs.testing_dir / video.testing_name(inputs.fps)
                sources[testing] = cache_dir / "real" / Path(video.mask_name(inputs.fps)).stem
    masks = {video: path.with_name(f"{path.name}.{cache_key(video)}.mp4") for video, path in sources.items()}
    for path in masks.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    missing = [(video, path) for video, path in masks.items() if not path.is_file()]
    _run_parallel(write_mask_video, missing, workers, "Physics-IQ masks")
    return masks


def _case_jobs(inputs: Inputs, masks: dict[Path, Path]) -> list[tuple]:
    """Arguments of case_metrics for every test case."""

    def real_mask(video: RealVideo) -> Path:
        if inputs.shipped_masks_dir is not None:
            return inputs.shipped_masks_dir / video.mask_name(inputs.fps)
        return masks[inputs.testing_dir / video.testing_name(inputs.fps)]

    return [
        (
            inputs.testing_dir / case.take1.testing_name(inputs.fps),
            inputs.testing_dir / case.take2.testing_name(inputs.fps),
            case.generated,
            real_mask(case.take1),
            real_mask(case.take2),
            masks[case.generated],
            inputs.num_frames,
        )
        for case in inputs.cases
    ]


def _group(cases: Sequence[Case], metrics: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """scenario -> view -> metrics, scenarios in order of their first case."""
    results: dict[str, dict[str, dict]] = {}
    for case, m in zip(cases, metrics, strict=True):
        results.setdefault(case.take1.scenario, {})[case.take1.view] = m
    return results


def _category_scores(inputs: Inputs, results: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """The score of each category of descriptions.csv on its own scenarios (None where undefined)."""
    categories: dict[str, dict[str, dict]] = {}
    for case in inputs.cases:
        scenario = case.take1.scenario
        categories.setdefault(case.take1.category, {})[scenario] = results[scenario]
    out = {}
    for name, subset in sorted(categories.items()):
        entry: dict[str, Any] = {"num_videos": sum(len(views) for views in subset.values())}
        try:
            scores = physics_iq(subset)
            entry |= {"physics_iq": scores.physics_iq, "physics_iq_raw": scores.physics_iq_raw}
        except ValueError as error:  # a physical variance of 0 on this category alone
            entry |= {"physics_iq": None, "physics_iq_raw": None, "note": str(error)}
        out[name] = entry
    return out


def _size(video: Path) -> tuple[int, int]:
    info = probe(video)
    return info.width, info.height


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score(
    data_dir: str | Path,
    generated_dir: str | Path,
    output_dir: str | Path,
    fps: int | None = None,
    workers: int | None = None,
    descriptions: str | Path | None = None,
) -> dict[str, Any]:
    """Scores the generated videos in `generated_dir` against the benchmark in `data_dir`.

    Args:
      data_dir: a physics-IQ-benchmark folder in the official layout (spec §2).
      generated_dir: `{ID}_….mp4` videos, one per scored take-1 test case, 5 s at one integer fps.
      output_dir: receives scores.json, per_video.csv, physics_iq.png and mask_cache/.
      fps: the generated videos' fps; read from them when None (a mismatch is an error).
      workers: processes for masks and metrics; all available cores when None.
      descriptions: the benchmark's descriptions.csv; default DATA_DIR/descriptions/descriptions.csv,
        else descriptions/descriptions.csv beside `data_dir` (``layout.find_descriptions``).

    Returns:
      The content of scores.json: the score, its clipped-off raw value, the four metrics, the four
      physical variances, the fps, which test cases were scored and the per-category scores.
    Raises:
      FileNotFoundError, ValueError: bad inputs, before anything is computed.
    """
    descriptions = None if descriptions is None else Path(descriptions)
    inputs = resolve_inputs(Path(data_dir), Path(generated_dir), fps, descriptions)
    if inputs.long_videos:
        names = ", ".join(p.name for p in inputs.long_videos[:3])
        warnings.warn(
            f"{len(inputs.long_videos)} generated videos ({names}, …) are longer than 5 s: only their first "
            f"{inputs.num_frames} frames are scored; the benchmark expects 5 s after the switch frame",
            stacklevel=2,
        )
    resized = [
        c
        for c in inputs.cases
        if _size(c.generated) != _size(inputs.testing_dir / c.take1.testing_name(inputs.fps))
    ]
    if resized:
        real = _size(inputs.testing_dir / resized[0].take1.testing_name(inputs.fps))
        warnings.warn(
            f"{len(resized)} generated videos are not at their real video's resolution (e.g. "
            f"{resized[0].generated.name}: {'x'.join(map(str, _size(resized[0].generated)))} against "
            f"{'x'.join(map(str, real))}): they are resized to it for scoring, which moves the score; "
            "generate at the benchmark's resolution",
            stacklevel=2,
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or _default_workers()

    masks = _mask_paths(inputs, output_dir / "mask_cache", workers)
    metrics = _run_parallel(case_metrics, _case_jobs(inputs, masks), workers, "Physics-IQ metrics")
    results = _group(inputs.cases, metrics)
    summary = {
        **dataclasses.asdict(physics_iq(results)),
        "num_videos": len(inputs.cases),
        "fps": inputs.fps,
        "complete": len(inputs.cases) == inputs.num_test_cases,
        "num_test_cases": inputs.num_test_cases,
        "scored_ids": [case.take1.id for case in inputs.cases],
        "scored_scenarios": list(results),
        "real_masks": "computed" if inputs.shipped_masks_dir is None else str(inputs.shipped_masks_dir),
        "categories": _category_scores(inputs, results),
    }
    write_json(summary, output_dir / "scores.json")
    write_results_csv(results, output_dir / "per_video.csv")
    plot(summary, output_dir / "physics_iq.png")
    return summary
