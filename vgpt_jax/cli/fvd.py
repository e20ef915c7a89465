"""``vgpt fvd``: Fréchet Video Distance between folders of videos (see vgpt_jax.evaluation.fvd).

Writes ``OUT/fvd.json`` (the score, the number of videos on each side, every protocol field, the
subset scores if asked, warnings) and ``OUT/features.npz`` (``real`` N x 400 and ``generated``
M x 400 I3D features in the order of the sorted paths, with those paths).
"""

from __future__ import annotations

import argparse
import pathlib

HELP = "FVD between a folder of real and a folder of generated videos (original I3D protocol by default)"
CONFIG = "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", help="folder of real videos (searched recursively, sorted by path)")
    parser.add_argument("--generated", required=True, help="folder of generated videos")
    parser.add_argument("--output-dir", required=True, help="where fvd.json and features.npz go")
    parser.add_argument(
        "--frames", type=int, default=16, help="frames per video, from the first (default 16)"
    )
    parser.add_argument(
        "--stride", type=int, default=1, help="take every N-th frame (default 1: consecutive)"
    )
    parser.add_argument(
        "--resize",
        choices=("squash", "center-crop"),
        default="squash",
        help="squash: both sides to 224 (original FVD); center-crop: short side to 224, then the centre",
    )
    parser.add_argument(
        "--real-stats",
        help="an .npz of the real videos' statistics: read if it exists (then --real is not needed), "
        "else computed from --real and written there",
    )
    parser.add_argument("--subset", type=int, help="also score random subsets of this many videos a side")
    parser.add_argument("--repeats", type=int, default=1, help="how many subsets to draw (default 1)")
    parser.add_argument(
        "--class-balanced",
        action="store_true",
        help="subsets take as many videos from each class; a video's class is its first sub-folder",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    parser.add_argument("--batch-per-device", type=int, default=4, help="videos per device per I3D call")


def _check_sources(args: argparse.Namespace) -> bool:
    """Whether the real statistics come from an existing --real-stats file; ValueError on a bad mix."""
    cached = args.real_stats is not None and pathlib.Path(args.real_stats).exists()
    if cached and args.real:
        raise ValueError(
            f"--real-stats {args.real_stats} exists: drop --real to use it, or delete it to recompute"
        )
    if not cached and not args.real:
        missing = f" ({args.real_stats} does not exist)" if args.real_stats else ""
        raise ValueError(f"give --real DIR, or --real-stats FILE of an earlier run{missing}")
    if cached and args.subset:
        raise ValueError("--subset draws from the real videos' features: give --real instead of --real-stats")
    if args.class_balanced and not args.subset:
        raise ValueError("--class-balanced applies to subsets: add --subset N")
    if args.repeats < 1 or (args.subset is not None and args.subset < 2):
        raise ValueError("--subset needs at least 2 videos and --repeats at least 1")
    return cached


def _relative_names(root: str, paths: list[pathlib.Path]) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


def _classes(root: str, paths: list[pathlib.Path]) -> list[str]:
    """Each video's first sub-folder under ``root``; ValueError if a video sits in ``root`` itself."""
    relative = [pathlib.PurePosixPath(name).parts for name in _relative_names(root, paths)]
    flat = ["/".join(parts) for parts in relative if len(parts) < 2]
    if flat:
        raise ValueError(
            f"--class-balanced takes each video's class from its sub-folder, but {flat[0]} has none"
        )
    return [parts[0] for parts in relative]


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    import numpy as np

    from vgpt_jax.evaluation import fvd

    protocol = fvd.Protocol(frames=args.frames, stride=args.stride, resize=args.resize)
    cached = _check_sources(args)
    generated_paths = fvd.list_videos(args.generated)
    real_paths = [] if cached else fvd.list_videos(args.real)
    fvd.check_videos(real_paths + generated_paths, protocol.frames, protocol.stride)
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    features = fvd.I3DFeatures(protocol.resize, per_device_batch=args.batch_per_device)
    arrays: dict[str, np.ndarray] = {}
    if cached:
        real_stats = fvd.load_statistics(args.real_stats, protocol)
    else:
        arrays["real"] = fvd.video_features(real_paths, protocol, features, progress="real")
        arrays["real_files"] = np.asarray(_relative_names(args.real, real_paths))
        real_stats = fvd.feature_statistics(arrays["real"])
        if args.real_stats:
            fvd.save_statistics(args.real_stats, real_stats, protocol)
    arrays["generated"] = fvd.video_features(generated_paths, protocol, features, progress="generated")
    arrays["generated_files"] = np.asarray(_relative_names(args.generated, generated_paths))
    score = fvd.frechet_distance(real_stats, fvd.feature_statistics(arrays["generated"]))

    report = {
        "fvd": score,
        "num_real": real_stats.count,
        "num_generated": len(generated_paths),
        "real": args.real_stats if cached else args.real,
        "generated": args.generated,
        "protocol": protocol.describe(),
        "warnings": fvd.size_warnings(real_stats.count, len(generated_paths)),
    }
    if args.subset:
        classes = {}
        if args.class_balanced:
            classes = {
                "real_classes": _classes(args.real, real_paths),
                "generated_classes": _classes(args.generated, generated_paths),
            }
        scores = fvd.subset_fvds(
            arrays["real"], arrays["generated"], args.subset, args.repeats, seed=args.seed, **classes
        )
        report["subsets"] = {
            "size": args.subset,
            "repeats": args.repeats,
            "class_balanced": args.class_balanced,
            "seed": args.seed,
            "fvd_mean": float(np.mean(scores)),
            "fvd_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            "fvds": scores,
        }
        report["warnings"] += fvd.size_warnings(args.subset, args.subset)
    (out / "fvd.json").write_text(json.dumps(report, indent=2) + "\n")
    np.savez(out / "features.npz", **arrays)

    print(f"FVD {score:.2f} ({report['num_real']} real, {report['num_generated']} generated videos)")
    if args.subset:
        mean, std = report["subsets"]["fvd_mean"], report["subsets"]["fvd_std"]
        print(f"FVD of {args.repeats} subsets of {args.subset}: {mean:.2f} ± {std:.2f}")
    print("protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.describe().items()))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out / 'fvd.json'} and {out / 'features.npz'}")
    return 0
