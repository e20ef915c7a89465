"""``vgpt convert``: the official Video-GPT folder <-> a params-only Orbax checkpoint."""

from __future__ import annotations

import argparse

HELP = "convert the released weights to a params-only checkpoint (--official) or back (--to-official)"
CONFIG = "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.convert.official import DTYPES

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--official", metavar="DIR", help="an official folder (config.json, model.safetensors, ...)"
    )
    source.add_argument(
        "--to-official", metavar="CKPT", help="a params-only checkpoint (vgpt convert / export)"
    )
    parser.add_argument(
        "--output", required=True, help="the checkpoint (--official) or folder (--to-official)"
    )
    parser.add_argument(
        "--param-dtype", default="float32", choices=DTYPES, help="parameter dtype (--official)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, help="tensor dtype (--to-official; default: the parameters')"
    )


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.convert import official

    if args.official:
        print(f"wrote {official.import_folder(args.official, args.output, args.param_dtype)}")
    else:
        print(f"wrote {official.export_checkpoint(args.to_official, args.output, args.dtype)}")
    return 0
