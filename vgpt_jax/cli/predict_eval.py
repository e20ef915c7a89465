"""``vgpt predict-eval``: the frame-prediction protocol on a folder of videos (see
vgpt_jax.evaluation.frame_prediction): a checkpoint's predictions and a copy-last-frame baseline,
scored by PSNR, SSIM and FVD."""

from __future__ import annotations

import argparse
import pathlib

HELP = "predict frames after the first K of every video in a folder; PSNR, SSIM and FVD beside a baseline"
CONFIG = "overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.sample.options import add_sampling_arguments

    parser.add_argument(
        "--checkpoint", required=True, type=pathlib.Path, help="a training workdir or an export"
    )
    parser.add_argument(
        "--data", required=True, type=pathlib.Path, help="folder of videos (searched recursively)"
    )
    parser.add_argument("--cond-frames", required=True, type=int, help="conditioning frames K")
    parser.add_argument("--pred-frames", required=True, type=int, help="predicted frames P")
    parser.add_argument("--output-dir", required=True, type=pathlib.Path, help="videos, records and metrics")
    parser.add_argument(
        "--stride", type=int, default=1, help="take every S-th frame of the videos (default 1)"
    )
    parser.add_argument(
        "--fvd-frames",
        choices=("all", "pred"),
        default="all",
        help="FVD over the conditioning + predicted frames (all: the Kinetics-600 convention) or pred only",
    )
    parser.add_argument("--no-fvd", action="store_true", help="PSNR and SSIM only (FVD runs I3D at 224x224)")
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.evaluation import frame_prediction, fvd
    from vgpt_jax.sample.options import sampling_overrides
    from vgpt_jax.sample.predict import Predictor

    task = frame_prediction.PredictionTask(args.cond_frames, args.pred_frames, args.stride, args.fvd_frames)
    features = None if args.no_fvd else fvd.I3DFeatures()
    summary = frame_prediction.evaluate_folder(
        lambda: (
            Predictor.from_checkpoint(
                args.checkpoint, overrides=args.config_overrides, **sampling_overrides(args)
            ).predict
        ),
        args.data,
        task,
        args.output_dir,
        features,
    )
    for name in ("model", frame_prediction.BASELINE):
        numbers = summary[name]
        fvd_text = "" if numbers["fvd"] is None else f", FVD {numbers['fvd']:.2f}"
        print(f"{name}: PSNR {numbers['psnr']:.2f} dB, SSIM {numbers['ssim']:.4f}{fvd_text}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    written = ", ".join(
        str(args.output_dir / name) for name in ("metrics.json", "per_video.csv", "metrics.png")
    )
    print(f"{summary['num_videos']} videos; wrote {written}")
    return 0
