"""``vgpt physics-iq score|generate|run``: the Physics-IQ benchmark (see vgpt_jax.evaluation.physics_iq)."""

from __future__ import annotations

import argparse

HELP = "Physics-IQ: score generated videos, generate the test cases from a checkpoint, or both"
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="score|generate|run and their flags")


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.evaluation.physics_iq import command

    return command.main(args.argv)
