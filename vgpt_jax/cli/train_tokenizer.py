"""``vgpt train-tokenizer``: train the clip tokenizer (``config.tokenizer``) on config.data.source_path."""

from __future__ import annotations

import argparse

from vgpt_jax.cli import distributed_flags

HELP = "train the clip tokenizer on the videos of config.data.source_path; writes WORKDIR/tokenizer"
CONFIG = "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="the tokenizer is written to WORKDIR/tokenizer")
    distributed_flags.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if not args.config.data.source_path:
        raise ValueError("config.data.source_path is empty: pass --config.data.source_path=DIR (videos)")
    distributed_flags.initialize(args)
    from vgpt_jax.train.tokenizer import train_tokenizer

    train_tokenizer(args.config, args.config.data.source_path, args.workdir)
    return 0
