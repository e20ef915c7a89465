"""``vgpt features``: pooled clean-stream features of a checkpoint for every video of a labelled set
(see vgpt_jax.evaluation.features), one ``features_L{layer}.npz`` per layer, for ``vgpt probe``."""

from __future__ import annotations

import argparse
import pathlib

HELP = "pooled hidden states of the clean stream after chosen layers, per video of a labelled set"
CONFIG = "overrides"


def layer_list(text: str) -> list[int]:
    """argparse type: comma-separated layer numbers, e.g. 8,16,24."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give layer numbers separated by commas, e.g. 8,16,24"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.evaluation.features import POOLINGS
    from vgpt_jax.sample.options import positive_int

    parser.add_argument(
        "--checkpoint", required=True, type=pathlib.Path, help="a training workdir or an export"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a JSONL manifest ({'video': PATH, 'label': INT} lines) or a folder of class sub-folders "
        "(UCF-101/: labels through classInd.txt)",
    )
    parser.add_argument("--layers", required=True, type=layer_list, help="layer numbers, 1 = after the first")
    parser.add_argument("--output-dir", required=True, type=pathlib.Path, help="where the features go")
    parser.add_argument(
        "--pooling",
        choices=tuple(POOLINGS),
        default="mean",
        help="; ".join(f"{k}: {v}" for k, v in POOLINGS.items()) + " (default mean)",
    )
    parser.add_argument(
        "--views", type=positive_int, default=1, help="clips per video, spread evenly, averaged"
    )
    parser.add_argument("--frames", type=positive_int, help="frames per clip (default: the checkpoint's)")
    parser.add_argument("--stride", type=positive_int, default=1, help="take every S-th frame (default 1)")
    parser.add_argument(
        "--class-index", help="classInd.txt naming a folder's classes (default: DIR/classInd.txt)"
    )
    parser.add_argument(
        "--pixels", action="store_true", help="also write the raw-pixel baseline, pooled alike"
    )
    parser.add_argument(
        "--random-init",
        type=int,
        metavar="SEED",
        help="use freshly initialised weights of the checkpoint's architecture (a baseline)",
    )
    parser.add_argument(
        "--batch-per-device", type=positive_int, help="clips per device (default: the config's)"
    )
    parser.add_argument("--chunk-videos", type=positive_int, default=64, help="videos per resumable shard")


def main(args: argparse.Namespace) -> int:
    from data_pipelines.labelled_source import open_labelled
    from vgpt_jax.checkpoint.inference import load_for_inference
    from vgpt_jax.evaluation import features

    source, class_names = open_labelled(args.data, args.class_index)
    config, params, tokenizer = load_for_inference(args.checkpoint, overrides=args.config_overrides)
    if args.random_init is not None:
        params = features.random_model_params(config, tokenizer.mesh, args.random_init)
    spec = features.FeatureSpec(
        tuple(args.layers),
        args.pooling,
        args.views,
        args.frames or config.data.num_frames,
        args.stride,
        args.pixels,
    )
    batch = args.batch_per_device or config.data.per_device_batch_size
    extractor = features.Extractor(config, params, tokenizer, tokenizer.mesh, spec, batch)
    meta = {
        "checkpoint": str(args.checkpoint.absolute()),
        "random_init": args.random_init,
        "model": {k: config.model[k] for k in ("num_layers", "hidden_size", "num_heads", "patch_size")},
        "data": str(pathlib.Path(args.data).absolute()),
    }
    summary = features.extract_folder(
        extractor, source.listing.videos, args.output_dir, meta, args.chunk_videos, class_names
    )

    model = f"random init (seed {args.random_init})" if args.random_init is not None else str(args.checkpoint)
    print(f"model: {model}, {config.model.num_layers} layers; layers {', '.join(map(str, extractor.layers))}")
    print(
        f"pooling: {spec.pooling} ({features.POOLINGS[spec.pooling]}); {spec.views} view(s) of "
        f"{spec.num_frames} frames at stride {spec.stride}, averaged; "
        f"feature shape {tuple(summary['feature_shape'])}"
    )
    skipped = source.listing.describe_skips()
    print(f"{summary['videos']} videos with features" + (f"; listing: {skipped}" if skipped else ""))
    if summary["unreadable"]:
        print(f"{len(summary['unreadable'])} unreadable videos skipped (first: {summary['unreadable'][0]})")
    if summary["short"]:
        print(f"{summary['short']} videos shorter than a clip (their last frame repeated)")
    print("wrote " + ", ".join(summary["written"]))
    return 0
