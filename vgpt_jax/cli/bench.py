"""``vgpt bench``: train-step and sampler timings against a measured peak (see vgpt_jax.bench)."""

from __future__ import annotations

import argparse

HELP = "time train steps and sampling (MFU, tokens/s), optionally beside the official compute path"
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="bench flags (vgpt bench -- --help)")


def main(args: argparse.Namespace) -> int:
    from vgpt_jax import bench

    bench.main(args.argv)
    return 0
