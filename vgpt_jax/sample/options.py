"""Command-line flags of the sampler's settings, shared by `vgpt sample` and `vgpt physics-iq generate`.

Every flag defaults to the checkpoint's own ``config.sampling`` (the settings the model was trained
and tuned with); a flag replaces one field, as ``--config.sampling.FIELD=VALUE`` does.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (frame rates and frame counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer: frame rates and frame counts are whole numbers (the benchmark "
            "ships 8, 16, 24 and 30 fps)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a positive integer")
    return value


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --steps, --cfg-scale, --condition-scale, --clip-frames, --window-frames and --seed
    (default: the checkpoint's)."""
    group = parser.add_argument_group("sampling (default: the checkpoint's config.sampling)")
    group.add_argument("--steps", type=positive_int, help="Euler steps per clip (the paper: 50)")
    group.add_argument(
        "--cfg-scale",
        type=float,
        help="image CFG weight against the history-free clip; 1 = none (the paper: 1.5)",
    )
    group.add_argument(
        "--condition-scale",
        type=float,
        help="guidance weight of a checkpoint's condition (a class), DESIGN §8; 1 = none",
    )
    group.add_argument(
        "--clip-frames", type=positive_int, help="frames generated per autoregressive round (the paper: 24)"
    )
    group.add_argument(
        "--window-frames",
        type=positive_int,
        help="history + clip frames the model sees per round; older frames are dropped (the paper: 80)",
    )
    group.add_argument("--seed", type=int, help="sampling seed (the release: 42)")


def sampling_overrides(args: argparse.Namespace) -> dict:
    """The ``config.sampling`` fields the flags of :func:`add_sampling_arguments` set (None: not given)."""
    return {
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "condition_scale": args.condition_scale,
        "clip_frames": args.clip_frames,
        "window_frames": args.window_frames,
        "seed": args.seed,
    }
