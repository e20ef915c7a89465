"""``vgpt bench``: train-step and sampler timings against a measured peak (see vgpt_jax.tools.bench)."""

from __future__ import annotations

import argparse

HELP = "time train steps and sampling (MFU, tokens/s), optionally beside the official compute path"
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.tools import bench

    bench.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.tools import bench

    bench.run(args, args.config_overrides)
    return 0
