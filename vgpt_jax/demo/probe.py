"""The linear probe on the synthetic physics world, small enough for a CPU in a few minutes.

    python -m vgpt_jax.demo.probe --workdir W

1. pre-training: the demo's stages (world, tokenizer, latents, Video-GPT) with the demo's model,
   at the reduced sizes of :data:`SMALL` (fewer videos and steps);
2. a second world from another seed, whose videos the model never saw, labelled by scene kind
   (``labels.jsonl``, split 3:1 into ``labels_train.jsonl`` / ``labels_test.jsonl``);
3. ``vgpt features`` on it: the pre-trained model with the raw-pixel baseline, and the same
   architecture freshly initialised;
4. ``vgpt probe`` of both folders: ``W/probe/probe.json`` and ``probe.png``.

Every stage keeps its outputs, so a rerun skips finished ones. ``--full`` pre-trains at the demo's
own sizes instead (``make demo``'s model); ``--config EXPERIMENT`` pre-trains another demo-shaped
experiment at its own sizes (``experiments/physics_gpu.py`` on a GPU), and in the workdir of a
finished ``vgpt demo`` of that experiment reuses its model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from vgpt_jax import cli
from vgpt_jax import config as config_lib
from vgpt_jax.demo import run as demo
from vgpt_jax.demo import synthetic_physics

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
FEATURE_FLAGS = ["--frames", "16", "--stride", "2", "--pooling", "frames"]
PROBE_FLAGS = ["--epochs", "200", "--batch-size", "64"]


def run(workdir: str, full: bool = False, log=print, experiment: str | None = None) -> dict[str, Any]:
    """Pre-trains, extracts, probes (skipping finished stages); returns the probe's report.

    ``experiment``: a demo-shaped experiment at its own sizes (default: ``demo``, at :data:`SMALL`'s
    unless ``full``)."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if experiment is None:
        config = config_lib.load_experiment("demo", [] if full else SMALL)
    else:
        config = config_lib.validate(config_lib.load_experiment(experiment))
    seconds = {}
    start = time.perf_counter()
    _, _, exported = demo.pretrain(config, workdir, log)
    seconds["pretrain"] = round(time.perf_counter() - start, 1)

    w = config.demo.world
    labelled = workdir / "probe_world" / "train"
    if not (labelled / synthetic_physics.LABELS_FILE).is_file():
        synthetic_physics.write_training_set(
            str(labelled.parent), PROBE_WORLD["num_videos"], w.size, w.size, PROBE_WORLD["seed"],
            w.train_fps, PROBE_WORLD["seconds"],
        )  # fmt: skip
    layers = ",".join(str(layer) for layer in range(1, config.model.num_layers + 1))
    common = ["--data", str(labelled / synthetic_physics.LABELS_FILE), "--layers", layers, *FEATURE_FLAGS]
    folders = {"pretrained": workdir / "features_pretrained", "random_init": workdir / "features_random"}
    start = time.perf_counter()
    for argv in (
        ["--output-dir", str(folders["pretrained"]), "--pixels"],
        ["--output-dir", str(folders["random_init"]), "--random-init", "0"],
    ):
        if cli.main(["features", "--checkpoint", str(exported), *common, *argv]):
            raise RuntimeError(f"vgpt features {' '.join(argv)} failed")
    seconds["features"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    splits = [f"--{s}-split" for s in ("train", "test")]
    argv = ["probe", "--features", *(f"{name}={path}" for name, path in folders.items())]
    argv += [splits[0], str(labelled / synthetic_physics.LABEL_SPLITS["train"])]
    argv += [splits[1], str(labelled / synthetic_physics.LABEL_SPLITS["test"])]
    if cli.main([*argv, "--output-dir", str(workdir / "probe"), *PROBE_FLAGS]):
        raise RuntimeError("vgpt probe failed")
    seconds["probe"] = round(time.perf_counter() - start, 1)
    report = json.loads((workdir / "probe" / "probe.json").read_text())
    log(f"seconds: {seconds}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--full", action="store_true", help="pre-train at the demo's own sizes")
    parser.add_argument("--config", help="a demo-shaped experiment at its own sizes (physics_gpu)")
    args = parser.parse_args(argv)
    run(args.workdir, args.full, experiment=args.config)


if __name__ == "__main__":
    main()
