"""Command-line flags of the sampler's settings, shared by `vgpt sample` and `vgpt physics-iq generate`.

Their defaults are the paper's sampling settings (VIDEOGPT_SPEC §9: 50 Euler steps, image CFG 1.5,
clips of 24 frames in an 80-frame window, seed 42), read from ``base_config().sampling`` so they
have one source; a checkpoint's own ``config.sampling`` is not used by these commands.
"""

from __future__ import annotations

import argparse

from vgpt_jax.config import base_config


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
    """Adds --steps, --cfg-scale, --clip-frames, --window-frames and --seed."""
    paper = base_config().sampling
    group = parser.add_argument_group("sampling (defaults: the paper's, VIDEOGPT_SPEC §9)")
    group.add_argument(
        "--steps",
        type=positive_int,
        default=paper.steps,
        help=f"Euler steps per clip (default {paper.steps})",
    )
    group.add_argument(
        "--cfg-scale",
        type=float,
        default=paper.cfg_scale,
        help=f"image CFG weight against the history-free clip; 1 = none (default {paper.cfg_scale})",
    )
    group.add_argument(
        "--clip-frames",
        type=positive_int,
        default=paper.clip_frames,
        help=f"frames generated per autoregressive round (default {paper.clip_frames})",
    )
    group.add_argument(
        "--window-frames",
        type=positive_int,
        default=paper.window_frames,
        help=f"history + clip frames the model sees per round; older frames are dropped (default "
        f"{paper.window_frames})",
    )
    group.add_argument("--seed", type=int, default=paper.seed, help=f"sampling seed (default {paper.seed})")


def sampling_overrides(args: argparse.Namespace) -> dict:
    """The ``config.sampling`` fields the flags of :func:`add_sampling_arguments` set."""
    return {
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "clip_frames": args.clip_frames,
        "window_frames": args.window_frames,
        "seed": args.seed,
    }
