"""``vgpt sample``: video prediction from a file with a checkpoint's own sampling settings."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "continue the first --cond-frames frames of --video by --num-frames frames (video prediction)"
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.sample.options import add_sampling_arguments, positive_int

    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir or an export")
    parser.add_argument("--video", required=True, type=Path, help="the input video")
    parser.add_argument("--cond-frames", required=True, type=positive_int, help="conditioning frames K")
    parser.add_argument("--num-frames", required=True, type=positive_int, help="frames to predict M")
    parser.add_argument("--output", required=True, type=Path, help="the output .mp4")
    parser.add_argument(
        "--stride",
        type=positive_int,
        default=1,
        help="take every S-th input frame (the release reads every 4th)",
    )
    parser.add_argument("--fps", type=positive_int, help="output fps (default: the input's fps / stride)")
    parser.add_argument(
        "--with-context", action="store_true", help="write the K conditioning frames before the prediction"
    )
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.sample.options import sampling_overrides
    from vgpt_jax.sample.predict import predict_file

    frames = predict_file(
        args.checkpoint,
        args.video,
        args.output,
        args.cond_frames,
        args.num_frames,
        stride=args.stride,
        fps=args.fps,
        with_context=args.with_context,
        overrides=args.config_overrides,
        **sampling_overrides(args),
    )
    print(f"wrote {frames} frames to {args.output}")
    return 0
