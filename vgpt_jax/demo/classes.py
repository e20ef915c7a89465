"""Class-to-video on the synthetic physics world: class-conditioned runs, judged and scored by FVD.

    python -m vgpt_jax.demo.classes --workdir W [--config experiments/physics_gpu.py] [--world motion]

1. the probe demo (:mod:`vgpt_jax.demo.probe`): pre-training, the labelled world of scene kinds and
   the linear probe of the pre-trained model's features;
2. two class-conditioned runs of one recipe on the labelled world's train split, a class prefix of
   one token from a 4 + 1 row table (DESIGN §8), every weight trained, the first clip's loss on
   (classes are generated from nothing): ``fine_tuned`` starts from the pre-trained export,
   ``from_scratch`` from a fresh initialisation (the paper's comparison, on this world);
3. generation: ``--videos-per-class`` videos of every class from nothing, for each run and each
   condition guidance weight of :data:`GUIDANCE`;
4. the judge: a linear classifier on the pre-trained model's features of *real* train-split videos
   (the probe's best layer by held-out accuracy, the probe's settings), scored on the real test
   split, then on the generated videos against the class each was asked for; with ``--fvd``, FVD
   of every generated set against the real test split.

The labelled world (``--world``, :data:`physics_scenes.CLASS_WORLDS`) is the four scene kinds by
default. At the CPU's 64 px their few small balls change too little of a video for a small model's
class to matter; ``motion``'s one large ball moves left, right, up or down, a class that fills the
frame. On it a second judge needs no model: the direction in which the frames' change moves
(:mod:`vgpt_jax.demo.motion_judge`), checked on the real test videos the same way. The README
("Class-to-video on the synthetic world") has both worlds' numbers.

``classes/classes.json`` (under the workdir, or ``W/motion``) holds each judge's accuracy on real
videos and, per run and guidance weight, the rate at which generated videos are judged the
asked-for class (chance: 1 / 4) and the FVD. Finished stages are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.pipeline import make_pipeline
from vgpt_jax import cli
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import checkpoint_config, export, load_for_inference
from vgpt_jax.checkpoint.params import is_params_checkpoint
from vgpt_jax.demo import motion_judge, physics_scenes, synthetic_physics
from vgpt_jax.demo import probe as probe_demo
from vgpt_jax.demo import run as demo
from vgpt_jax.evaluation import features as features_lib
from vgpt_jax.evaluation import fvd
from vgpt_jax.evaluation import probe as probe_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.train import launch, preflight
from vgpt_jax.train.inputs import TrainInputs
from vgpt_jax.train.step import Trainer

VIDEOS_PER_CLASS = 16  # 64 videos: the judge's rate to about ±6 points; FVD wants more (--videos-per-class)
GUIDANCE = (1.0, 3.0)  # condition_scale: 1 = the conditioned model alone, 3 = the config's default
# The labelled world's videos are 4 s at 8 fps (32 frames), and the probe reads 16 frames at stride 2:
# the fine-tune learns 16 frames at interval 2, so a generated video spans what the judge was fit on.
FRAME_INTERVAL = 2
# a class run's steps on the motion world: pre-training's few hundred leave its class unread
MOTION_STEPS = 1200


def class_recipe(steps: int, num_classes: int) -> list[str]:
    """Overrides of the pre-training config for a class run of ``steps`` steps at its learning rate."""
    warmup = max(1, steps // 10)
    return [
        "condition.kind=class",
        f"condition.num_classes={num_classes}",
        f"data.frame_interval={FRAME_INTERVAL}",
        "layout.first_clip_loss_weight=1.0",
        f"train.steps={steps}",
        f"train.checkpoint_every={max(1, steps // 2)}",
        f"train.log_every={max(1, steps // 6)}",
        "train.eval_every=0",
        f"optim.warmup_steps={warmup}",
        f"optim.decay_steps={steps - warmup}",
    ]


def world_recipe(world: str, config: ml_collections.ConfigDict) -> tuple[int, list[str]]:
    """A class run's steps on ``world`` and its overrides beyond :func:`class_recipe`, for the
    pre-training ``config``.

    The kinds' runs are the published ones: pre-training's steps, nothing more. The motion world
    is the CPU's: :data:`MOTION_STEPS`; every sample cut into the sampler's clips
    (``sampling.clip_frames`` frames each), so that the clip generated from nothing, where the
    class alone says which way the ball goes, is always as long as the sampler's first (a random
    partition makes it 1 to 8 frames); the MP4s decoded in a worker process (at least one), for
    which the steps otherwise wait two thirds of the time on 2 cores.
    """
    if world == probe_demo.DEFAULT_WORLD:
        return config.train.steps, []
    clip = config.sampling.clip_frames
    return MOTION_STEPS, [
        "layout.partition=fixed",
        f"layout.fixed_partition={(clip,) * (config.data.num_frames // clip)}",
        f"data.worker_count={max(config.data.worker_count, 1)}",
    ]


def class_run(
    pretrain_config: ml_collections.ConfigDict,
    steps: int,
    num_classes: int,
    init_from: Path | None,
    labelled: Path,
    folder: Path,
    log,
) -> Path:
    """A class-conditioned run of ``steps`` steps on ``labelled``'s train split (fine-tuned from
    ``init_from``, or from scratch when None) in ``folder``, exported; finished runs are only read."""
    out = folder / "export"
    if is_params_checkpoint(out):
        return out
    config = config_lib.apply_overrides(pretrain_config, class_recipe(steps, num_classes))
    fields = {"data.source_path": str(labelled / synthetic_physics.LABEL_SPLITS["train"])}
    config = config_lib.with_fields(config, {**fields, "train.init_from": str(init_from or "")})
    run_dir = folder / "videogpt"
    state = launch.run(config_lib.validate(config), str(run_dir), log=log)
    if int(state.step) < config.train.steps:
        raise demo.PreemptedError(f"the class run {folder} was preempted at step {int(state.step)}")
    export(run_dir, out)
    return out


def generate_classes(
    exported: Path, scale: float, num_frames: int, num_classes: int, videos_per_class: int, folder: Path
) -> Path:
    """``videos_per_class`` videos of each class at condition guidance ``scale`` (``vgpt
    generate-set``, into ``folder/<class>/``), and a manifest of them labelled by the asked-for
    class; returns the manifest."""
    manifest = folder / "asked.jsonl"
    if manifest.is_file():
        return manifest
    num = num_classes * videos_per_class
    argv = ["generate-set", "--checkpoint", str(exported), "--output-dir", str(folder),
            "--num", str(num), "--num-frames", str(num_frames), "--class-balanced",
            "--condition-scale", str(scale),
            # one batch of them all: the sampler's batch of one per device would take 64 rounds
            f"--config.data.per_device_batch_size={num}"]  # fmt: skip
    if cli.main(argv):
        raise RuntimeError(f"vgpt {' '.join(argv)} failed")
    # a class-conditioned checkpoint without a class index names its folders by class number
    rows = [
        json.dumps({"video": path.relative_to(folder).as_posix(), "label": int(path.parent.name)})
        for path in fvd.list_videos(folder)
    ]
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def class_fvds(real_videos: list[Path], generated: dict[str, Path], num_frames: int) -> dict[str, float]:
    """FVD (original I3D protocol) of each generated folder against ``real_videos``, read at the
    frame interval the runs learnt (the generated videos are consecutive frames)."""
    features = fvd.I3DFeatures()
    real = fvd.video_features(real_videos, fvd.Protocol(num_frames, FRAME_INTERVAL), features, "real")
    consecutive = fvd.Protocol(num_frames, 1)
    return {
        name: fvd.fvd_from_features(
            real, fvd.video_features(fvd.list_videos(folder), consecutive, features, name)
        )
        for name, folder in generated.items()
    }


def class_losses(exported: Path, test_manifest: Path, num_batches: int = 16) -> dict[str, float]:
    """The class run's mean denoising loss on real test clips denoised from nothing (one clip, no
    history) given their own class, the null class and another (the next) class, each variant on
    the same latents, noise and times.

    A model that reads its class has the lowest loss with the right one; the gaps measure how much
    the class tells it, independently of how good its samples look.
    """
    # one clip of every frame: no history, so the class is all the model is told (class-to-video)
    num_frames = checkpoint_config(exported).data.num_frames
    overrides = [
        "condition.dropout=0.0",
        f"data.source_path={test_manifest}",
        "data.worker_count=0",
        "layout.partition=fixed",
        f"layout.fixed_partition=({num_frames},)",
    ]
    config, params, tokenizer = load_for_inference(exported, overrides=overrides)
    trainer = Trainer(config, tokenizer.mesh)
    spec = preflight.clip_spec(config, tokenizer.cfg.downsample_factor)
    batches = make_pipeline(
        config, tokenizer.mesh, preflight.open_training_source(config, spec), seed=0, spec=spec
    )
    inputs = TrainInputs(config, tokenizer)
    num_classes = config.condition.num_classes
    variants = {
        "own": lambda own: own,
        "null": lambda own: jnp.full_like(own, num_classes),
        "other": lambda own: (own + 1) % num_classes,
    }
    losses: dict[str, list[float]] = {name: [] for name in variants}
    with sharding_context(tokenizer.mesh, config.mesh.logical_axis_rules):
        loss = jax.jit(trainer.loss)
        for i in range(num_batches):
            batch = inputs(next(batches), i)
            key = jax.random.key(i)
            for name, condition in variants.items():
                losses[name].append(
                    float(loss(params, {**batch, "condition": condition(batch["condition"])}, key))
                )
    return {name: float(np.mean(values)) for name, values in losses.items()}


def best_layer(probe_report: dict[str, Any]) -> str:
    """The pre-trained model's features file ('L<n>') of the best held-out (train split) accuracy."""
    results = probe_report["runs"]["pretrained"]["results"]
    layers = {name: r for name, r in results.items() if r["layer"] is not None}
    return max(layers, key=lambda name: max(layers[name]["val_top1"].values()))


def judge(
    real: probe_lib.FeatureFile,
    train_ids: list[str],
    test_ids: list[str],
    generated: dict[str, probe_lib.FeatureFile],
    num_classes: int,
    weight_decay: float,
    settings: probe_lib.ProbeSettings,
) -> dict[str, Any]:
    """The classifier fit on ``real``'s train videos (with ``settings``' epochs): its accuracy on
    the test videos, and per set of ``generated`` features the fraction judged the class each was
    asked for (its label)."""
    train, test = probe_lib.select(train_ids, real), probe_lib.select(test_ids, real)
    train_x, test_x, *generated_x = probe_lib.standardise(
        real.features[train.rows], real.features[test.rows], *(g.features for g in generated.values())
    )
    params = probe_lib.fit_linear(train_x, real.labels[train.rows], num_classes, weight_decay, settings)

    def rate(x: np.ndarray, labels: np.ndarray) -> float:
        return probe_lib.top_k_accuracy(probe_lib.logits_of(params, x), labels, 1)

    return {
        "real_test_accuracy": rate(test_x, real.labels[test.rows]),
        "asked_class_rate": {
            name: rate(x, g.labels) for (name, g), x in zip(generated.items(), generated_x, strict=True)
        },
        "chance": 1 / num_classes,
    }


def judge_motion(test_manifest: Path, generated: dict[str, Path], num_frames: int) -> dict[str, Any]:
    """The motion judge (:mod:`vgpt_jax.demo.motion_judge`): its accuracy on the real test videos,
    read as the class runs learnt them (``num_frames`` frames at :data:`FRAME_INTERVAL`), and per
    manifest of ``generated`` videos (``num_frames`` consecutive frames) the fraction judged the
    class each was asked for (its label)."""

    def rate(manifest: Path, frames: range) -> float:
        verdicts, labels = motion_judge.judge_manifest(manifest, frames)
        return float(np.mean(verdicts == labels))

    real_frames = range(0, num_frames * FRAME_INTERVAL, FRAME_INTERVAL)
    return {
        "real_test_accuracy": rate(test_manifest, real_frames),
        "asked_class_rate": {name: rate(manifest, range(num_frames)) for name, manifest in generated.items()},
        "chance": 1 / len(physics_scenes.MOTIONS),
    }


def run(
    workdir: str,
    full: bool = False,
    log=print,
    experiment: str | None = None,
    videos_per_class: int = VIDEOS_PER_CLASS,
    steps: int | None = None,
    with_fvd: bool = False,
    overrides: Sequence[str] = (),
    world: str = probe_demo.DEFAULT_WORLD,
) -> dict[str, Any]:
    """The probe demo, the fine-tuned and from-scratch class runs, generation, the judges and FVD
    (finished stages skipped); returns and writes the report. ``full`` and ``experiment`` as
    :func:`vgpt_jax.demo.probe.run`, ``overrides`` (``FIELD=VALUE``) of the pre-training config and
    so of the class runs; ``steps`` of each class run (default: :func:`world_recipe`'s);
    ``with_fvd`` adds FVD (I3D on a CPU takes ~1.5 s a video); ``world`` the labelled world of
    :data:`physics_scenes.CLASS_WORLDS` (``motion`` adds the motion judge)."""
    probe_report = probe_demo.run(workdir, full, log, experiment, overrides=overrides, world=world)
    workdir = Path(workdir).absolute()
    root = probe_demo.world_dir(workdir, world)
    pretrain_config = probe_demo.pretrain_config(full, experiment, overrides)
    _, pretrain_config, exported = demo.pretrain(pretrain_config, workdir, log)
    labelled = root / "probe_world" / "train"
    num_classes = len(physics_scenes.CLASS_WORLDS[world])
    default_steps, recipe = world_recipe(world, pretrain_config)
    steps = steps or default_steps
    run_config = config_lib.apply_overrides(pretrain_config, recipe)
    runs = {
        name: class_run(run_config, steps, num_classes, init_from, labelled, root / "classes" / name, log)
        for name, init_from in (("fine_tuned", exported), ("from_scratch", None))
    }

    layer = best_layer(probe_report)
    frames = probe_demo.FEATURE_FRAMES
    folders, manifests, generated = {}, {}, {}
    for (name, tuned), scale in itertools.product(runs.items(), GUIDANCE):
        key = f"{name} w={scale:g}"
        folders[key] = root / "classes" / name / f"generated_w{scale:g}"
        manifests[key] = generate_classes(tuned, scale, frames, num_classes, videos_per_class, folders[key])
        features = folders[key] / "features"
        # the folder's last file: its settings file comes first and an interrupted run leaves it alone
        if not (features / features_lib.output_file(layer)).is_file():
            argv = ["features", "--checkpoint", str(exported), "--data", str(manifests[key]),
                    "--layers", layer[1:], "--frames", str(frames), "--pooling", "frames",
                    "--output-dir", str(features)]  # fmt: skip
            if cli.main(argv):
                raise RuntimeError(f"vgpt features {' '.join(argv)} failed")
        (generated[key],) = probe_lib.load_feature_folder(features)

    real = {f.name: f for f in probe_lib.load_feature_folder(root / "features_pretrained")}[layer]
    train_ids, _ = probe_lib.read_split(labelled / synthetic_physics.LABEL_SPLITS["train"])
    test_ids, _ = probe_lib.read_split(labelled / synthetic_physics.LABEL_SPLITS["test"])
    weight_decay = probe_report["runs"]["pretrained"]["results"][layer]["weight_decay"]
    saved = probe_report["settings"]  # the probe's own classifier settings
    settings = probe_lib.ProbeSettings(**{**saved, "weight_decays": tuple(saved["weight_decays"])})
    report = {
        "world": world,
        "judge_layer": layer,
        **judge(real, train_ids, test_ids, generated, num_classes, weight_decay, settings),
    }
    test_manifest = labelled / synthetic_physics.LABEL_SPLITS["test"]
    if world == "motion":
        report["motion_judge"] = judge_motion(test_manifest, manifests, frames)
    report["test_loss_by_class_given"] = {
        name: class_losses(tuned, test_manifest) for name, tuned in runs.items()
    }
    if with_fvd:  # the real side: the test split, videos no class run trained on
        report["fvd"] = class_fvds([labelled / video_id for video_id in test_ids], folders, frames)
    report.update(videos_per_class=videos_per_class, steps=steps)
    (root / "classes" / "classes.json").write_text(json.dumps(report, indent=2) + "\n")
    judges = {f"a linear classifier on {layer} features": report}
    if "motion_judge" in report:
        judges["the direction the change moves in"] = report["motion_judge"]
    for key in report["asked_class_rate"]:
        rates = ", ".join(f"{100 * j['asked_class_rate'][key]:.1f}%" for j in judges.values())
        fvd_text = f", FVD {report['fvd'][key]:.1f}" if with_fvd else ""
        log(f"class-to-video, {key}: {rates} judged the asked-for class{fvd_text}")
    for name, losses in report["test_loss_by_class_given"].items():
        given = ", ".join(f"{variant} class {value:.4f}" for variant, value in losses.items())
        log(f"{name}: denoising loss on real test clips given their {given}")
    accuracies = "; ".join(
        f"{description}, right on {100 * j['real_test_accuracy']:.1f}% of the real test videos"
        for description, j in judges.items()
    )
    log(f"(chance {100 * report['chance']:.0f}%; the judges, in order: {accuracies})")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--full", action="store_true", help="pre-train at the demo's own sizes")
    parser.add_argument("--config", help="a demo-shaped experiment at its own sizes (physics_gpu)")
    parser.add_argument("--videos-per-class", type=int, default=VIDEOS_PER_CLASS)
    parser.add_argument(
        "--steps", type=int, help="steps of each class run (default: pre-training's; motion: MOTION_STEPS)"
    )
    parser.add_argument("--fvd", action="store_true", help="also FVD of each set against the real test set")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a pre-training field"
    )
    probe_demo.add_world_flag(parser)
    args = parser.parse_args(argv)
    run(
        args.workdir,
        args.full,
        experiment=args.config,
        videos_per_class=args.videos_per_class,
        steps=args.steps,
        with_fvd=args.fvd,
        overrides=args.set,
        world=args.world,
    )


if __name__ == "__main__":
    main()
