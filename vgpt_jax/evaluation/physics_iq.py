"""Physics-IQ evaluation: `vgpt physics-iq score` computes the benchmark's score for a folder of videos;
`generate` writes a checkpoint's videos for the test cases, and `run` does both.

The numbers equal the official evaluation's (google-deepmind/physics-IQ-benchmark, spec in
PHYSICS_IQ_SPEC.md) for the same videos, with three differences in behaviour only: inputs are never
renamed or written to, every cached mask is keyed by the content it was computed from, and any
subset of the 198 test cases can be scored (the outputs say which, and whether the set is complete).

    vgpt physics-iq score --data-dir physics-IQ-benchmark --generated-dir G --output-dir O

writes O/scores.json, O/per_video.csv (the official results CSV: one row per scenario, columns per
view) and O/physics_iq.png; masks computed here are kept in O/mask_cache.

    vgpt physics-iq generate --checkpoint C --data-dir physics-IQ-benchmark --fps 8 --output-dir G
    vgpt physics-iq run --checkpoint C --data-dir physics-IQ-benchmark --fps 8 --output-dir O

(see physics_iq_generate.py; `run` writes the videos to O/generated unless --generated-dir is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from vgpt_jax.evaluation.physics_iq_layout import Case, Inputs, RealVideo, resolve_inputs
from vgpt_jax.evaluation.physics_iq_masks import cache_key, write_mask_video
from vgpt_jax.evaluation.physics_iq_metrics import case_metrics
from vgpt_jax.evaluation.physics_iq_report import plot, write_json, write_results_csv
from vgpt_jax.evaluation.physics_iq_score import physics_iq
from vgpt_jax.evaluation.physics_iq_video import probe


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
) -> dict[str, Any]:
    """Scores the generated videos in `generated_dir` against the benchmark in `data_dir`.

    Args:
      data_dir: a physics-IQ-benchmark folder in the official layout (spec §2).
      generated_dir: `{ID}_….mp4` videos, one per scored take-1 test case, 5 s at one integer fps.
      output_dir: receives scores.json, per_video.csv, physics_iq.png and mask_cache/.
      fps: the generated videos' fps; read from them when None (a mismatch is an error).
      workers: processes for masks and metrics; all available cores when None.

    Returns:
      The content of scores.json: the score, its clipped-off raw value, the four metrics, the four
      physical variances, the fps, which test cases were scored and the per-category scores.
    Raises:
      FileNotFoundError, ValueError: bad inputs, before anything is computed.
    """
    inputs = resolve_inputs(Path(data_dir), Path(generated_dir), fps)
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


def _add_score_arguments(sub: argparse.ArgumentParser, generated_required: bool) -> None:
    sub.add_argument("--data-dir", required=True, type=Path, help="the physics-IQ-benchmark folder")
    sub.add_argument(
        "--generated-dir",
        required=generated_required,
        type=Path,
        help="folder of generated {ID}_….mp4 videos"
        + ("" if generated_required else " (default: OUTPUT_DIR/generated)"),
    )
    sub.add_argument("--output-dir", required=True, type=Path, help="where the scores and mask cache go")
    sub.add_argument("--workers", type=int, help="parallel processes for scoring (default: all cores)")


def _add_generate_arguments(sub: argparse.ArgumentParser, fps_help: str) -> None:
    from vgpt_jax.sample.options import add_sampling_arguments, positive_int

    sub.add_argument(
        "--checkpoint", required=True, type=Path, help="a training workdir or a `vgpt export` folder"
    )
    sub.add_argument("--fps", required=True, type=positive_int, help=fps_help)
    sub.add_argument(
        "--cond-frames",
        type=positive_int,
        help="conditioning frames: the last ones of each 3 s conditioning video (default: all, 3·FPS)",
    )
    add_sampling_arguments(sub)


def _parser() -> argparse.ArgumentParser:
    from vgpt_jax.sample.options import positive_int

    parser = argparse.ArgumentParser(prog="vgpt physics-iq", description="Physics-IQ benchmark evaluation.")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser(
        "score",
        help="score a folder of generated videos",
        description="Computes the official Physics-IQ score of {ID}_….mp4 videos (any subset of the 198 "
        "test cases) and writes scores.json, per_video.csv and physics_iq.png to the output folder.",
    )
    _add_score_arguments(sub, generated_required=True)
    sub.add_argument("--fps", type=positive_int, help="fps of the generated videos (default: read from them)")
    sub = commands.add_parser(
        "generate",
        help="generate the test cases' videos from a checkpoint",
        description="Video to video, the paper's setting: for every take-1 test case, predicts exactly "
        "5 s after its 3 s conditioning video at FPS and writes {ID}_{view}_{scenario}.mp4 (5.000 s at "
        "FPS, the conditioning video's size) to the output folder. Finished videos are skipped.",
    )
    sub.add_argument("--data-dir", required=True, type=Path, help="the physics-IQ-benchmark folder")
    sub.add_argument("--output-dir", required=True, type=Path, help="where the generated videos go")
    _add_generate_arguments(sub, "the fps folder to condition on and to write at (e.g. 8)")
    sub = commands.add_parser(
        "run",
        help="generate, then score, in one command",
        description="`generate` into --generated-dir (default OUTPUT_DIR/generated), then `score` into "
        "--output-dir.",
    )
    _add_score_arguments(sub, generated_required=False)
    _add_generate_arguments(sub, "the fps folder to condition on, write at and score at (e.g. 8)")
    return parser


def _generate(args: argparse.Namespace, output_dir: Path) -> None:
    """Runs `generate` with the parsed flags, writing to ``output_dir``."""
    from vgpt_jax.evaluation.physics_iq_generate import generate
    from vgpt_jax.sample.options import sampling_overrides

    done = generate(
        args.checkpoint, args.data_dir, output_dir, args.fps, args.cond_frames, **sampling_overrides(args)
    )
    print(f"generated {done['generated']} videos ({done['skipped']} were already there) in {output_dir}")


def main(argv: list[str]) -> int:
    """`vgpt physics-iq score|generate|run …`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            _generate(args, args.output_dir)
            return 0
        if args.command == "run":
            args.generated_dir = args.generated_dir or args.output_dir / "generated"
            _generate(args, args.generated_dir)
        summary = score(args.data_dir, args.generated_dir, args.output_dir, args.fps, args.workers)
    except (FileNotFoundError, ValueError) as error:
        print(f"vgpt physics-iq {args.command}: error: {error}", file=sys.stderr)
        return 1
    scope = "complete" if summary["complete"] else "PARTIAL, not comparable with the leaderboard"
    print(
        f"Physics-IQ score {summary['physics_iq']:.2f} (raw {summary['physics_iq_raw']:.4f}) at "
        f"{summary['fps']} fps on {summary['num_videos']} of {summary['num_test_cases']} test cases "
        f"({scope}); outputs in {args.output_dir}"
    )
    return 0
