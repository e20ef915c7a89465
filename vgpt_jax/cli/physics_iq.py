"""``vgpt physics-iq score|generate|run``: the Physics-IQ benchmark (see vgpt_jax.evaluation.physics_iq).

``generate`` and ``run`` start from the checkpoint's own ``config.sampling``; a sampling flag or
``--config.sampling.FIELD=VALUE`` replaces one field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Physics-IQ: score generated videos, generate the test cases from a checkpoint, or both"
CONFIG = "overrides"


def _add_data_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--data-dir", required=True, type=Path, help="the physics-IQ-benchmark folder")
    sub.add_argument(
        "--descriptions",
        type=Path,
        metavar="FILE",
        help="the benchmark's descriptions.csv (default: DATA_DIR/descriptions/descriptions.csv, else "
        "descriptions/descriptions.csv beside DATA_DIR, as in the benchmark's repository)",
    )


def _add_score_arguments(sub: argparse.ArgumentParser, generated_required: bool) -> None:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.sample.options import positive_int

    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser(
        "score",
        help="score a folder of generated videos",
        description="Computes the official Physics-IQ score of {ID}_….mp4 videos (any subset of the 198 "
        "test cases) and writes scores.json, per_video.csv and physics_iq.png to the output folder.",
    )
    _add_data_arguments(sub)
    _add_score_arguments(sub, generated_required=True)
    sub.add_argument("--fps", type=positive_int, help="fps of the generated videos (default: read from them)")
    sub = commands.add_parser(
        "generate",
        help="generate the test cases' videos from a checkpoint",
        description="Video to video, the paper's setting: for every take-1 test case, predicts exactly "
        "5 s after its 3 s conditioning video at FPS and writes {ID}_{view}_{scenario}.mp4 (5.000 s at "
        "FPS, the conditioning video's size) to the output folder. Finished videos are skipped.",
    )
    _add_data_arguments(sub)
    sub.add_argument("--output-dir", required=True, type=Path, help="where the generated videos go")
    _add_generate_arguments(sub, "the fps folder to condition on and to write at (e.g. 8)")
    sub = commands.add_parser(
        "run",
        help="generate, then score, in one command",
        description="`generate` into --generated-dir (default OUTPUT_DIR/generated), then `score` into "
        "--output-dir.",
    )
    _add_data_arguments(sub)
    _add_score_arguments(sub, generated_required=False)
    _add_generate_arguments(sub, "the fps folder to condition on, write at and score at (e.g. 8)")


def _generate(args: argparse.Namespace, output_dir: Path) -> None:
    """Runs `generate` with the parsed flags, writing to ``output_dir``."""
    from vgpt_jax.evaluation.physics_iq.generate import generate
    from vgpt_jax.sample.options import sampling_overrides

    done = generate(
        args.checkpoint,
        args.data_dir,
        output_dir,
        args.fps,
        args.cond_frames,
        args.descriptions,
        overrides=args.config_overrides,
        **sampling_overrides(args),
    )
    print(f"generated {done['generated']} videos ({done['skipped']} were already there) in {output_dir}")


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.evaluation.physics_iq.score import score

    if args.command == "generate":
        _generate(args, args.output_dir)
        return 0
    if args.command == "run":
        args.generated_dir = args.generated_dir or args.output_dir / "generated"
        _generate(args, args.generated_dir)
    summary = score(
        args.data_dir, args.generated_dir, args.output_dir, args.fps, args.workers, args.descriptions
    )
    scope = "complete" if summary["complete"] else "PARTIAL, not comparable with the leaderboard"
    print(
        f"Physics-IQ score {summary['physics_iq']:.2f} (raw {summary['physics_iq_raw']:.4f}) at "
        f"{summary['fps']} fps on {summary['num_videos']} of {summary['num_test_cases']} test cases "
        f"({scope}); outputs in {args.output_dir}"
    )
    return 0
