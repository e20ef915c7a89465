"""``vgpt encode-latents``: the frozen clip tokenizer run once over config.data.source_path."""

from __future__ import annotations

import argparse
import os

HELP = "encode the videos of config.data.source_path once with config.tokenizer.weights (ArrayRecord)"
CONFIG = "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="a folder for the latent records")


def main(args: argparse.Namespace) -> int:
    from data_pipelines.clip_sampler import REJECTED, SKIPPED, ClipSpec
    from data_pipelines.encode_latents import encode_dataset, tokenizer_meta
    from data_pipelines.pipeline import open_source
    from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
    from vgpt_jax.parallel.mesh import make_mesh

    config, d = args.config, args.config.data
    if not d.source_path:
        raise ValueError("config.data.source_path is empty: pass --config.data.source_path=DIR (videos)")
    tokenizer = tokenizer_from_weights(config, make_mesh(config.mesh))
    spec = ClipSpec.from_config(d, downsample=tokenizer.cfg.downsample_factor, min_side=d.min_side)
    meta = {
        "tokenizer": tokenizer_meta(tokenizer),
        "tokenizer_weights": config.tokenizer.weights,
        "scaling_factor": tokenizer.cfg.scaling_factor,
        "height": spec.height,
        "width": spec.width,
        "source": os.path.abspath(d.source_path),
    }
    counts = encode_dataset(tokenizer, open_source(d.source_path, d.split), args.output, spec, meta)
    print(
        f"wrote {counts['records']} latent records to {args.output} ({spec.height}x{spec.width} pixels); "
        f"{counts[SKIPPED]} unreadable videos skipped, {counts[REJECTED]} rejected by the size rules"
    )
    return 0
