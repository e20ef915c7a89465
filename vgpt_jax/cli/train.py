"""``vgpt train``: train (or resume) Video-GPT in a workdir; every host of a job runs the same command."""

from __future__ import annotations

import argparse

from vgpt_jax.cli import distributed_flags

HELP = "train or resume Video-GPT in --workdir (checkpoints, logs, TensorBoard, samples)"
CONFIG = "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="where checkpoints, logs and samples go")
    distributed_flags.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    distributed_flags.initialize(args)
    from vgpt_jax.train import launch

    launch.run(args.config, args.workdir)
    return 0
