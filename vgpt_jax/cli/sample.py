"""``vgpt sample``: video prediction from a file, image animation from pictures (``--image``, the
conditioning frames), or class- or text-to-video from a class- or text-conditioned checkpoint
(``--class-id`` / ``--prompt`` alone), with a checkpoint's own sampling settings."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "continue the first --cond-frames frames of --video by --num-frames frames (video prediction), "
    "animate --image pictures, or generate --num-frames frames of class --class-id or text --prompt"
)
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.sample.options import add_sampling_arguments, positive_int

    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir or an export")
    parser.add_argument(
        "--video", type=Path, help="the input video (none: generate from --class-id or --prompt)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        action="append",
        help="a picture (PNG, JPEG) to animate; repeat for K pictures of one size, the K conditioning frames",
    )
    parser.add_argument("--cond-frames", type=positive_int, help="conditioning frames K (with --video)")
    parser.add_argument("--num-frames", required=True, type=positive_int, help="frames to predict M")
    parser.add_argument("--output", required=True, type=Path, help="the output .mp4")
    parser.add_argument(
        "--stride",
        type=positive_int,
        default=1,
        help="take every S-th input frame (the release reads every 4th)",
    )
    parser.add_argument(
        "--fps",
        type=positive_int,
        help="output fps (default: the input's fps / stride; without a video: the checkpoint's "
        "train.sample_fps)",
    )
    parser.add_argument(
        "--with-context",
        action="store_true",
        help="write the K conditioning frames (or pictures) before the prediction",
    )
    parser.add_argument(
        "--class-id",
        type=int,
        help="the class of a class-conditioned checkpoint (condition.kind 'class'); its num_classes: none",
    )
    parser.add_argument(
        "--prompt",
        help="the text of a text-conditioned checkpoint, tokenized with condition.text_tokenizer's files",
    )
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.device_stats import CompileClock, device_memory_gib

    with CompileClock() as clock:
        frames = _sample(args)
    peak = device_memory_gib()["peak_memory_gib"]
    print(
        f"wrote {frames} frames to {args.output} in {clock.wall_s:.1f} s ({clock.compile_s:.1f} s of it "
        f"compiling)" + (f", peak device memory {peak:.1f} GiB" if peak else "")
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    """The frames written, by the mode the arguments choose."""
    from vgpt_jax.sample.options import sampling_overrides
    from vgpt_jax.sample.predict import animate_file, generate_file, predict_file

    common = {
        "fps": args.fps,
        "overrides": args.config_overrides,
        "class_id": args.class_id,
        "prompt": args.prompt,
        **sampling_overrides(args),
    }
    if args.image and args.video is not None:
        raise ValueError("give --video or --image, not both: either is the conditioning frames")
    if args.image:
        if args.cond_frames is not None:
            raise ValueError("--cond-frames is for --video: with --image, the K pictures are the K frames")
        return animate_file(
            args.checkpoint,
            args.image,
            args.output,
            args.num_frames,
            with_context=args.with_context,
            **common,
        )
    elif args.video is not None:
        if args.cond_frames is None:
            raise ValueError(
                "--video needs --cond-frames K: the video's first K frames condition the prediction"
            )
        return predict_file(
            args.checkpoint,
            args.video,
            args.output,
            args.cond_frames,
            args.num_frames,
            stride=args.stride,
            with_context=args.with_context,
            **common,
        )
    elif args.class_id is None and args.prompt is None:
        raise ValueError(
            "pass --video (video prediction), --image (image animation), --class-id or --prompt "
            "(class- or text-to-video)"
        )
    return generate_file(args.checkpoint, args.output, args.num_frames, **common)
