"""The linear probe on the synthetic physics world, small enough for a CPU in a few minutes.

    python -m vgpt_jax.demo.probe --workdir W

1. pre-training: the demo's stages (world, tokenizer, latents, Video-GPT) with the demo's model,
   at the reduced sizes of :data:`SMALL` (fewer videos and steps);
2. a second world from another seed, whose videos the model never saw, labelled by scene kind
   (``labels.jsonl``, split 3:1 into ``labels_train.jsonl`` / ``labels_test.jsonl``);
3. ``vgpt features`` on it: the pre-trained model with the raw-pixel baseline, and the same
   architecture freshly initialised;
4. ``vgpt probe`` of both folders: ``W/probe/probe.json`` and ``probe.png``.

``--world motion`` labels the second world by the direction its one large ball moves in
(:data:`physics_scenes.MOTIONS`) instead of by scene kind; its world, features and probe are under
``W/motion`` (the pre-training is the same). Every stage keeps its outputs, so a rerun skips
finished ones. ``--full`` pre-trains at the demo's
own sizes instead (``make demo``'s model); ``--config EXPERIMENT`` pre-trains another demo-shaped
experiment at its own sizes (``experiments/physics_gpu.py`` on a GPU), and in the workdir of a
finished ``vgpt demo`` of that experiment reuses its model.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from vgpt_jax import cli
from vgpt_jax import config as config_lib
from vgpt_jax.demo import physics_scenes, synthetic_physics
from vgpt_jax.demo import run as demo

# experiments/demo.py at a size that pre-trains in about two minutes on 2 CPU cores
SMALL = [
    "demo.world.num_train=96",
    "demo.world.num_scenarios=1",
    "demo.world.train_seconds=4.0",
    "tokenizer.train.steps=150",
    "tokenizer.optim.warmup_steps=20",
    "tokenizer.optim.decay_steps=130",
    "train.steps=300",
    "train.checkpoint_every=300",
    "train.log_every=50",
    "optim.warmup_steps=30",
    "optim.decay_steps=270",
]
# 4 s videos: every release and launch of a scene falls in its first 3 s, which 16 frames at stride 2
# (8 fps) cover; a video's first 2 s often show the balls still held, whatever the kind
PROBE_WORLD = {"num_videos": 600, "seed": 2, "seconds": 4.0}
# the ball is a token or two of 16 in a frame and the backgrounds vary, so a mean over the whole
# clip keeps little of the motion: per-frame means keep when things move
FEATURE_FRAMES = 16
FEATURE_FLAGS = ["--frames", str(FEATURE_FRAMES), "--stride", "2", "--pooling", "frames"]
PROBE_FLAGS = ["--epochs", "200", "--batch-size", "64"]
DEFAULT_WORLD = "kinds"  # of physics_scenes.CLASS_WORLDS


def pretrain_config(
    full: bool = False, experiment: str | None = None, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """The demo's config at :data:`SMALL`'s sizes (its own with ``full``), or ``experiment``'s, with
    ``overrides`` (``FIELD=VALUE``)."""
    if experiment is None:
        return config_lib.validate(config_lib.load_experiment("demo", [*([] if full else SMALL), *overrides]))
    return config_lib.validate(config_lib.load_experiment(experiment, list(overrides)))


def world_dir(workdir: Path, world: str) -> Path:
    """The folder of a labelled world's outputs (``probe_world``, features, probe, class runs):
    the workdir for the kinds, whose folders were there first, a subfolder for any other."""
    return workdir if world == DEFAULT_WORLD else workdir / world


def upper_layers(num_layers: int) -> list[int]:
    """The top third of the layers (17-24 of 24), where the probe's edge from pre-training shows."""
    return [layer for layer in range(1, num_layers + 1) if layer > 2 * num_layers // 3]


def seed_summary(reports: list[dict[str, Any]], num_layers: int) -> dict[str, Any]:
    """Per run (pre-trained, random init) and probe seed: the mean top-1 over :func:`upper_layers`
    and the best layer's top-1, with their mean over seeds."""
    upper = upper_layers(num_layers)
    summary: dict[str, Any] = {"upper_layers": [upper[0], upper[-1]], "seeds": len(reports)}
    for name in reports[0]["runs"]:
        by_seed = []
        for report in reports:
            top1 = {r["layer"]: r["top1"] for r in report["runs"][name]["results"].values() if r["layer"]}
            by_seed.append((float(np.mean([top1[layer] for layer in upper])), max(top1.values())))
        upper_means, bests = zip(*by_seed, strict=True)
        summary[name] = {
            "upper_mean_top1": list(upper_means),
            "best_top1": list(bests),
            "upper_mean_top1_over_seeds": float(np.mean(upper_means)),
            "best_top1_over_seeds": float(np.mean(bests)),
        }
    return summary


def run(
    workdir: str,
    full: bool = False,
    log=print,
    experiment: str | None = None,
    seeds: int = 1,
    overrides: Sequence[str] = (),
    world: str = DEFAULT_WORLD,
) -> dict[str, Any]:
    """Pre-trains, extracts, probes (skipping finished stages); returns the first seed's report.

    ``experiment``: a demo-shaped experiment at its own sizes (default: ``demo``, at :data:`SMALL`'s
    unless ``full``), with ``overrides`` of its fields. ``seeds`` > 1 repeats the comparison with
    random initialisations and probe seeds 0..seeds-1 (``W/probe``, ``W/probe_s1``, ...) and writes
    ``W/probe_seeds.json`` (the pre-training is one run either way). ``world`` names the labelled
    world of :data:`physics_scenes.CLASS_WORLDS` probed (its outputs under :func:`world_dir`)."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    config = pretrain_config(full, experiment, overrides)
    seconds = {}
    start = time.perf_counter()
    _, _, exported = demo.pretrain(config, workdir, log)
    seconds["pretrain"] = round(time.perf_counter() - start, 1)

    w = config.demo.world
    root = world_dir(workdir, world)
    labelled = root / "probe_world" / "train"
    if not (labelled / synthetic_physics.LABELS_FILE).is_file():
        synthetic_physics.write_training_set(
            str(labelled.parent), PROBE_WORLD["num_videos"], w.size, w.size, PROBE_WORLD["seed"],
            w.train_fps, PROBE_WORLD["seconds"], kinds=physics_scenes.CLASS_WORLDS[world],
        )  # fmt: skip
    layers = ",".join(str(layer) for layer in range(1, config.model.num_layers + 1))
    common = ["--data", str(labelled / synthetic_physics.LABELS_FILE), "--layers", layers, *FEATURE_FLAGS]
    pretrained = root / "features_pretrained"
    random_init = [root / ("features_random" if s == 0 else f"features_random_s{s}") for s in range(seeds)]
    start = time.perf_counter()
    extractions = [["--output-dir", str(pretrained), "--pixels"]]
    extractions += [
        ["--output-dir", str(folder), "--random-init", str(s)] for s, folder in enumerate(random_init)
    ]
    for argv in extractions:
        if cli.main(["features", "--checkpoint", str(exported), *common, *argv]):
            raise RuntimeError(f"vgpt features {' '.join(argv)} failed")
    seconds["features"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    reports = []
    for seed, folder in enumerate(random_init):
        out = root / ("probe" if seed == 0 else f"probe_s{seed}")
        argv = ["probe", "--features", f"pretrained={pretrained}", f"random_init={folder}"]
        argv += ["--train-split", str(labelled / synthetic_physics.LABEL_SPLITS["train"])]
        argv += ["--test-split", str(labelled / synthetic_physics.LABEL_SPLITS["test"])]
        if cli.main([*argv, "--output-dir", str(out), "--seed", str(seed), *PROBE_FLAGS]):
            raise RuntimeError("vgpt probe failed")
        reports.append(json.loads((out / "probe.json").read_text()))
    seconds["probe"] = round(time.perf_counter() - start, 1)
    if seeds > 1:
        summary = seed_summary(reports, config.model.num_layers)
        (root / "probe_seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
        first, last = summary["upper_layers"]
        for name in reports[0]["runs"]:
            values = ", ".join(f"{100 * v:.1f}" for v in summary[name]["upper_mean_top1"])
            log(f"{name}: mean top-1 over layers {first}-{last} by seed: {values}")
    log(f"seconds: {seconds}")
    return reports[0]


def add_world_flag(parser: argparse.ArgumentParser) -> None:
    """``--world``: the labelled world of :data:`physics_scenes.CLASS_WORLDS`."""
    parser.add_argument(
        "--world",
        choices=tuple(physics_scenes.CLASS_WORLDS),
        default=DEFAULT_WORLD,
        help="the labelled world: scene kinds (default), or the direction one large ball moves in",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--full", action="store_true", help="pre-train at the demo's own sizes")
    parser.add_argument("--config", help="a demo-shaped experiment at its own sizes (physics_gpu)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="random initialisations and probe seeds to compare over"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a pre-training field"
    )
    add_world_flag(parser)
    args = parser.parse_args(argv)
    run(
        args.workdir,
        args.full,
        experiment=args.config,
        seeds=args.seeds,
        overrides=args.set,
        world=args.world,
    )


if __name__ == "__main__":
    main()
