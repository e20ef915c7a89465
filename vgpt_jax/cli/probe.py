"""``vgpt probe``: a linear probe (AdamW, weight decay chosen on held-out train videos) on the
features folders of ``vgpt features``; top-1 / top-5 per layer as OUT/probe.json and OUT/probe.png
(see vgpt_jax.evaluation.probe)."""

from __future__ import annotations

import argparse
import pathlib

HELP = "linear probe on `vgpt features` folders: top-1/top-5 by layer on a test split, JSON and a plot"
CONFIG = "none"


def named_folder(text: str) -> tuple[str, pathlib.Path]:
    """argparse type: ``NAME=DIR`` or ``DIR`` (named after the folder)."""
    name, sep, folder = text.partition("=")
    path = pathlib.Path(folder if sep else text)
    return (name if sep else path.name), path


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give numbers separated by commas, e.g. 0,0.01,0.1"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.evaluation.probe import ProbeSettings

    defaults = ProbeSettings()
    parser.add_argument(
        "--features",
        required=True,
        nargs="+",
        type=named_folder,
        help="one or more `vgpt features` output folders, as DIR or NAME=DIR (curves of one plot)",
    )
    parser.add_argument("--train-split", required=True, help="trainlist01.txt (UCF-101) or a JSONL manifest")
    parser.add_argument("--test-split", required=True, help="testlist01.txt (UCF-101) or a JSONL manifest")
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        help="where probe.json and probe.png go (default: the first folder)",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument(
        "--lr",
        type=float,
        default=defaults.learning_rate,
        help=f"AdamW learning rate (default {defaults.learning_rate})",
    )
    parser.add_argument(
        "--weight-decays",
        type=float_list,
        default=defaults.weight_decays,
        help="AdamW weight decays to choose from on held-out train videos (default "
        + ",".join(map(str, defaults.weight_decays))
        + ")",
    )
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="train videos held out for the sweep",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)


def main(args: argparse.Namespace) -> int:
    from vgpt_jax.evaluation import probe

    folders = dict(args.features)
    if len(folders) != len(args.features):
        raise ValueError("two --features folders have one name: name them, e.g. trained=DIR random=DIR")
    settings = probe.ProbeSettings(
        args.epochs, args.lr, args.weight_decays, args.batch_size, args.val_fraction, args.seed
    )
    output = args.output_dir or args.features[0][1]
    report = probe.probe_folders(folders, args.train_split, args.test_split, settings, output)

    if report["split_bad_rows"]:
        print(f"{report['split_bad_rows']} unreadable split-file rows skipped")
    for name, run in report["runs"].items():
        spec, counts = run["meta"]["spec"], run["counts"]
        print(
            f"{name}: pooling {spec['pooling']} ({spec['pooling_means']}), {spec['views']} view(s) of "
            f"{spec['num_frames']} frames; {counts['train_videos']} train / "
            f"{counts['test_videos']} test videos"
        )
        missing = counts["missing_train"] + counts["missing_test"]
        if missing:
            print(
                f"  {missing} videos named by the splits have no features, skipped "
                f"({counts['missing_train']} train, {counts['missing_test']} test; "
                f"first: {', '.join(counts['first_missing'])})"
            )
        if counts["unlabelled"]:
            print(f"  {counts['unlabelled']} videos without a label skipped")
        for feature, result in run["results"].items():
            top1, top_k = 100 * result["top1"], 100 * result[f"top{probe.TOP_K}"]
            print(
                f"  {feature:>7}: top-1 {top1:5.1f}%  top-{result['k']} {top_k:5.1f}%"
                f"  (weight decay {result['weight_decay']:g}, chance {100 / result['num_classes']:.1f}%)"
            )
    print(f"wrote {output / 'probe.json'} and {output / 'probe.png'}")
    return 0
