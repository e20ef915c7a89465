"""``vgpt demo``: synthetic physics world -> tokenizer -> Video-GPT -> Physics-IQ against a baseline."""

from __future__ import annotations

import argparse

HELP = "the whole method on a synthetic physics world, scored by Physics-IQ (make demo)"
CONFIG = "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="where every stage's outputs and the report go")


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.demo import run as demo

    try:
        demo.run(args.config, args.workdir)
    except demo.PreemptedError as e:  # its checkpoint is saved: a preempted job exits cleanly, to be rerun
        print(f"vgpt demo: {e}; its checkpoint is saved: rerun the same command to resume")
    return 0
