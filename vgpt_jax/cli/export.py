"""``vgpt export``: a params-only checkpoint (Video-GPT + tokenizer + config) for inference."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a params-only checkpoint (model + tokenizer) that sample and physics-iq accept"
CONFIG = "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir (or an export)")
    parser.add_argument("--output", required=True, type=Path, help="a new folder for the export")
    parser.add_argument(
        "--keep-adapter",
        action="store_true",
        help="keep LoRA adapters as their own parameters (default: merged into the weights, lora.rank 0)",
    )


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.checkpoint.inference import export

    print(f"exported {args.checkpoint} to {export(args.checkpoint, args.output, args.keep_adapter)}")
    return 0
