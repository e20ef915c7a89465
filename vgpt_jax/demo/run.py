"""``make demo``: the whole method end to end on a CPU in minutes, on a synthetic physics world.

    vgpt demo --config experiments/demo.py --workdir W

1. world: training videos and a benchmark split in the Physics-IQ layout (vgpt_jax.demo.synthetic_physics);
2. tokenizer: the per-frame AutoencoderKL trained on the training frames, then frozen;
3. latents: the training videos encoded once (data_pipelines.encode_latents);
4. Video-GPT: trained on the latents (``vgpt train``'s code path), then exported;
5. Physics-IQ: the model continues every take-1 conditioning video to 5 s (``vgpt physics-iq
   generate``'s code path), a copy of the last conditioning frame is the baseline, and both are
   scored with the benchmark's definitions;
6. frame prediction: on the world's held-out videos (fresh scenes of the training generator) the
   model predicts ``evaluation.pred_frames`` frames after ``evaluation.cond_frames`` (``vgpt
   predict-eval``'s code path), scored by PSNR, SSIM and (``demo.fvd``) FVD beside the
   copy-last-frame baseline.

The report in W: ``report.json`` (``physics_iq.model`` / ``physics_iq.baseline``,
``frame_prediction``, the tokenizer's held-out PSNR, the stages' times and the paths),
``loss_curves.png``, ``scores.png``, ``frame_prediction/metrics.png`` and ``side_by_side/`` (real |
predicted, MP4 and GIF). Every stage keeps its outputs: rerunning after a crash skips finished
stages (training resumes from its last checkpoint, generation and scoring skip finished videos).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from data_pipelines import video_io
from data_pipelines.array_record_source import INDEX_FILE
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.encode_latents import encode_dataset, tokenizer_meta
from data_pipelines.pipeline import open_source
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import export
from vgpt_jax.checkpoint.params import is_params_checkpoint
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.demo import synthetic_physics
from vgpt_jax.evaluation import frame_prediction, fvd
from vgpt_jax.evaluation.frame_prediction import PredictionTask
from vgpt_jax.evaluation.physics_iq.generate import generate, read_conditioning
from vgpt_jax.evaluation.physics_iq.layout import (
    CONDITIONING_SECONDS,
    EVAL_SECONDS,
    find_descriptions,
    split_dir,
    take_one_videos,
)
from vgpt_jax.evaluation.physics_iq.score import score
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.sample.predict import Predictor
from vgpt_jax.train import launch
from vgpt_jax.train.loop import read_metrics
from vgpt_jax.train.samples import side_by_side
from vgpt_jax.train.tokenizer import TOKENIZER_DIR, train_tokenizer

WORLD_DIR, LATENTS_DIR, MODEL_DIR, EXPORT_DIR = "world", "latents", "videogpt", "export"
TOKENIZER_RUN = "tokenizer_run"
TOKENIZER_SUMMARY = "tokenizer_summary.json"
HELD_OUT_DIR = "held_out"  # under the world: the frame-prediction videos
GENERATED_DIR, SCORES_DIR, SIDE_BY_SIDE_DIR = "generated", "scores", "side_by_side"
FRAME_PREDICTION_DIR = "frame_prediction"
MODEL, BASELINE = "model", "baseline"
REPORT = "report.json"


def held_out_window(task: PredictionTask, fps: int) -> range:
    """The frames of a world video that a held-out video keeps: the task's first K frames end just
    before the switch time (``CONDITIONING_SECONDS``), so its P frames are the first after it.

    Every release and launch of a scene happens before the switch time (physics_scenes), so the
    predicted frames always move: from t = 0, a frame predicted while the balls are still held
    equals the last conditioning frame bit for bit, and the baseline's PSNR would be +inf.
    """
    first = CONDITIONING_SECONDS * fps - task.cond_frames * task.stride
    if first < 0:
        raise ValueError(
            f"evaluation.cond_frames = {task.cond_frames} at stride {task.stride} reach before the "
            f"world's first frame ({CONDITIONING_SECONDS} s at {fps} fps before the switch time)"
        )
    return range(first, first + fvd.span(task.num_frames, task.stride))


def write_held_out(folder: Path, world: ml_collections.ConfigDict, frames: range) -> None:
    """``world.num_eval`` videos ``heldout-NNNNN-KIND.mp4`` in ``folder``: the training generator's
    videos of seed ``world.eval_seed`` (other scenes than the training set's), cut to ``frames``."""
    if world.eval_seed == world.seed:
        raise ValueError(
            f"demo.world.eval_seed = {world.eval_seed} is the training set's seed: choose another"
        )
    folder.mkdir(parents=True)
    seconds = frames.stop / world.train_fps
    for index in range(world.num_eval):
        _, kind, video = synthetic_physics.training_video(
            world.eval_seed, index, world.size, world.size, world.train_fps, seconds
        )
        video_io.write_video(
            str(folder / f"heldout-{index:05d}-{kind}.mp4"), video[frames.start :], world.train_fps
        )


def held_out_videos(workdir: Path) -> Path:
    """The folder of the world's held-out videos (frame prediction, in training and after it)."""
    return workdir / WORLD_DIR / HELD_OUT_DIR


def make_world(config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], Any]) -> Path:
    """The synthetic world (training set, held-out videos, benchmark) under workdir/world, written once.

    Written to a temporary folder and renamed when complete, so a crash never leaves half a world.
    """
    world = workdir / WORLD_DIR
    if world.is_dir():
        return world
    w = config.demo.world
    partial = workdir / f"{WORLD_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    # the stages train on the stored frames (ArrayRecord: no decoding in the steps' way); the MP4s
    # are the same videos, to watch
    synthetic_physics.write_training_set(
        str(partial),
        w.num_train,
        w.size,
        w.size,
        w.seed,
        w.train_fps,
        w.train_seconds,
        formats=("mp4", "array_record"),
        workers=w.workers,
    )
    write_held_out(
        partial / HELD_OUT_DIR, w, held_out_window(PredictionTask.from_config(config), w.train_fps)
    )
    synthetic_physics.write_benchmark(str(partial), w.num_scenarios, w.size, w.size, w.seed, w.workers)
    partial.rename(world)
    log(
        f"[world] {w.num_train} training videos, {w.num_eval} held-out videos and {w.num_scenarios} "
        f"benchmark scenarios ({3 * w.num_scenarios} test cases) at {w.size}x{w.size} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return world


class PreemptedError(Exception):
    """A training stage stopped on SIGTERM after saving its checkpoint: rerunning the demo resumes it."""


def training_clips(world: Path) -> Path:
    """The world's training videos as stored frames (ArrayRecord)."""
    return world / "train" / "clips"


def tokenizer_weights(workdir: Path) -> Path:
    """The demo's trained tokenizer (its training run is workdir/tokenizer_run)."""
    return workdir / TOKENIZER_RUN / TOKENIZER_DIR


def tokenizer_stage(config: ml_collections.ConfigDict, world: Path, workdir: Path, log) -> dict:
    """Trains (or resumes) the tokenizer on the world's training videos in workdir/tokenizer_run,
    unless its tokenizer is complete."""
    summary_path = workdir / TOKENIZER_SUMMARY
    if is_params_checkpoint(tokenizer_weights(workdir)) and summary_path.is_file():
        return json.loads(summary_path.read_text())
    summary = train_tokenizer(config, str(training_clips(world)), str(workdir / TOKENIZER_RUN), log=log)
    if summary.get("preempted"):
        raise PreemptedError(f"the tokenizer was preempted at step {summary['steps']}")
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def latents_stage(config: ml_collections.ConfigDict, world: Path, workdir: Path, log) -> Path:
    """The training videos encoded once by the frozen tokenizer (workdir/latents), unless present."""
    latents = workdir / LATENTS_DIR
    if (latents / INDEX_FILE).is_file():
        return latents
    shutil.rmtree(latents, ignore_errors=True)
    start = time.perf_counter()
    tokenizer = tokenizer_from_weights(config, make_mesh(config.mesh))
    d = config.data
    spec = ClipSpec.from_config(d, downsample=tokenizer.cfg.downsample_factor, min_side=d.min_side)
    meta = {"tokenizer": tokenizer_meta(tokenizer), "tokenizer_weights": config.tokenizer.weights}
    counts = encode_dataset(tokenizer, open_source(str(training_clips(world))), str(latents), spec, meta)
    log(f"[latents] {counts['records']} videos encoded in {time.perf_counter() - start:.1f} s")
    return latents


def video_gpt_stage(config: ml_collections.ConfigDict, workdir: Path, log) -> Path:
    """Trains (or resumes) Video-GPT in workdir/videogpt, then exports it to workdir/export."""
    exported = workdir / EXPORT_DIR
    if is_params_checkpoint(exported):
        return exported
    state = launch.run(config, str(workdir / MODEL_DIR), log=log)
    if int(state.step) < config.train.steps:
        raise PreemptedError(f"Video-GPT was preempted at step {int(state.step)}")
    export(workdir / MODEL_DIR, exported)
    return exported


def pretrain(
    config: ml_collections.ConfigDict, workdir: Path, log, timed=None
) -> tuple[dict, ml_collections.ConfigDict, Path]:
    """The world, tokenizer, latents and Video-GPT stages in ``workdir`` (finished ones skipped).

    Returns the tokenizer's summary, the config that trained Video-GPT (tokenizer and latents
    filled in) and the export. ``timed(name, fn, *args)`` runs each stage (default: plainly).
    """
    timed = timed or (lambda name, fn, *args: fn(*args))
    world = timed("world", make_world, config, workdir, log)
    tokenizer = timed("tokenizer", tokenizer_stage, config, world, workdir, log)
    # the latents are the trained tokenizer's, and Video-GPT's config names it for inference
    config = config_lib.with_fields(config, {"tokenizer.weights": str(tokenizer_weights(workdir))})
    latents = timed("latents", latents_stage, config, world, workdir, log)
    # in-training frame prediction (train.eval_every) scores the world's held-out videos
    config = config_lib.with_fields(
        config, {"data.source_path": str(latents), "evaluation.videos": str(held_out_videos(workdir))}
    )
    exported = timed("video_gpt", video_gpt_stage, config, workdir, log)
    return tokenizer, config, exported


def copy_last_frame_baseline(data_dir: Path, fps: int, output_dir: Path) -> Path:
    """For each take-1 test case, its last conditioning frame held for 5 s, under the generated name.

    Videos already written are kept (they are written complete, then renamed), as generation does.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    for video in take_one_videos(find_descriptions(data_dir)):
        output = output_dir / video.generated_name
        if output.exists():
            continue
        last = read_conditioning(split_dir(data_dir, "conditioning", fps) / video.conditioning_name(fps), 1)
        video_io.write_mp4(output, np.broadcast_to(last, (EVAL_SECONDS * fps, *last.shape[1:])), fps)
    return output_dir


def write_side_by_side(data_dir: Path, generated: Path, fps: int, output_dir: Path, count: int) -> list[str]:
    """MP4 + GIF of ``count`` test cases: the real take 1 | the model, conditioning then prediction."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for video in take_one_videos(find_descriptions(data_dir))[:count]:
        conditioning = split_dir(data_dir, "conditioning", fps) / video.conditioning_name(fps)
        context = read_conditioning(conditioning, CONDITIONING_SECONDS * fps)
        testing = split_dir(data_dir, "testing", fps) / video.testing_name(fps)
        real = video_io.read_frames(str(testing), range(EVAL_SECONDS * fps))
        predicted = video_io.read_frames(str(generated / video.generated_name), range(EVAL_SECONDS * fps))
        frames = side_by_side(np.concatenate([context, real]), np.concatenate([context, predicted]))
        stem = output_dir / f"{video.id}_{video.scenario.removesuffix('.mp4')}"
        video_io.write_video(f"{stem}.mp4", frames, fps)
        video_io.write_gif(f"{stem}.gif", frames, fps)
        written.append(f"{stem}.mp4")
    return written


def frame_prediction_stage(config: ml_collections.ConfigDict, exported: Path, workdir: Path) -> dict:
    """``vgpt predict-eval``'s code path in workdir/frame_prediction: the export and the
    copy-last-frame baseline on the held-out videos (FVD with ``demo.fvd``); scored videos are kept.

    Returns :func:`frame_prediction.evaluate_folder`'s summary.
    """
    return frame_prediction.evaluate_folder(
        lambda: Predictor.from_checkpoint(exported).predict,
        held_out_videos(workdir),
        PredictionTask.from_config(config),
        workdir / FRAME_PREDICTION_DIR,
        fvd.I3DFeatures() if config.demo.fvd else None,
    )


def frame_prediction_text(summary: dict) -> str:
    """The model's PSNR, SSIM and FVD (if computed) beside the baseline's, for the last log line."""
    model, baseline = summary["model"], summary[frame_prediction.BASELINE]
    numbers = [
        f"PSNR {model['psnr']:.2f} vs {baseline['psnr']:.2f} dB",
        f"SSIM {model['ssim']:.3f} vs {baseline['ssim']:.3f}",
    ]
    if model["fvd"] is not None:
        numbers.append(f"FVD {model['fvd']:.1f} vs {baseline['fvd']:.1f}")
    task = summary["task"]
    return (
        f"frame prediction ({task['cond_frames']} -> {task['pred_frames']} frames of "
        f"{summary['num_videos']} held-out videos), Video-GPT vs copy-last-frame: {', '.join(numbers)}"
    )


def plot_losses(tokenizer_summary: dict, model_metrics: dict[int, dict], path: Path, log_every: int) -> None:
    """Two panels: the tokenizer's training loss and Video-GPT's, per logged step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    tok_ax, model_ax = fig.subplots(1, 2)
    tok_losses = tokenizer_summary["losses"]
    tok_ax.plot([log_every * (i + 1) for i in range(len(tok_losses))], tok_losses)
    tok_ax.set(
        title=f"clip tokenizer (held-out PSNR {tokenizer_summary['psnr']:.1f} dB)",
        xlabel="step",
        ylabel="reconstruction + KL loss",
        yscale="log",
    )
    steps = sorted(s for s, m in model_metrics.items() if "loss" in m)  # step 0 holds the baseline's eval
    model_ax.plot(steps, [model_metrics[s]["loss"] for s in steps])
    model_ax.set(title="Video-GPT (next-clip flow matching)", xlabel="step", ylabel="x1 MSE", yscale="log")
    fig.savefig(path, dpi=110)


def plot_scores(scores: dict[str, dict], path: Path) -> None:
    """Bars of the Physics-IQ score and its four metrics for the model and the baseline."""
    from matplotlib.figure import Figure

    keys = ("physics_iq", "spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou", "mse")
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys)), keys, strict=True):
        values = [scores[name][key] for name in (MODEL, BASELINE)]
        bars = ax.bar(["Video-GPT", "last frame"], values, color=["C0", "darkgrey"])
        ax.bar_label(bars, fmt="%.2f" if key == "physics_iq" else "%.4f")
        variance = scores[MODEL].get(f"physical_variance_{key}")
        if variance is not None:
            ax.axhline(variance, color="C3", linestyle="--", label="take 2 vs take 1")
            ax.legend(fontsize="small")
        ax.set(title=key.replace("_", " "))
    fig.suptitle("Physics-IQ on the synthetic world's test cases (higher is better, MSE lower)")
    fig.savefig(path, dpi=110)


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], Any] = print) -> dict:
    """Runs every stage in ``workdir`` (skipping finished ones) and writes the report; returns it."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        log(f"=== {name}")
        out = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 1)
        return out

    tokenizer, config, exported = pretrain(config, workdir, log, timed)
    benchmark = workdir / WORLD_DIR / synthetic_physics.BENCHMARK_DIR

    # the export carries the training config's sampling settings, which generation starts from
    fps = config.demo.fps
    generated = {MODEL: workdir / GENERATED_DIR / MODEL, BASELINE: workdir / GENERATED_DIR / BASELINE}
    timed("generate", generate, exported, benchmark, generated[MODEL], fps, config.demo.cond_frames)
    timed("baseline", copy_last_frame_baseline, benchmark, fps, generated[BASELINE])
    scores = {
        name: timed(f"score {name}", score, benchmark, folder, workdir / SCORES_DIR / name, fps)
        for name, folder in generated.items()
    }
    predicted = timed("frame_prediction", frame_prediction_stage, config, exported, workdir)
    videos = write_side_by_side(
        benchmark, generated[MODEL], fps, workdir / SIDE_BY_SIDE_DIR, config.demo.side_by_side
    )
    model_metrics = read_metrics(str(workdir / MODEL_DIR))
    plot_losses(tokenizer, model_metrics, workdir / "loss_curves.png",
                config.tokenizer.train.log_every)  # fmt: skip
    plot_scores(scores, workdir / "scores.png")

    report = {
        "physics_iq": {name: scores[name]["physics_iq"] for name in scores},
        "frame_prediction": predicted,
        "metrics": {
            name: {k: v for k, v in summary.items() if isinstance(v, int | float)}
            for name, summary in scores.items()
        },
        "tokenizer": {k: tokenizer[k] for k in ("psnr", "psnr_sample", "latent_std", "steps")},
        "video_gpt_final_loss": model_metrics[config.train.steps]["loss"],
        "seconds": seconds,
        "fps": fps,
        "test_cases": scores[MODEL]["num_videos"],
        "side_by_side": videos,
        "export": str(exported),
    }
    (workdir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log(
        f"Physics-IQ on {report['test_cases']} synthetic test cases at {fps} fps: "
        f"Video-GPT {report['physics_iq'][MODEL]:.2f}, copy-last-frame baseline "
        f"{report['physics_iq'][BASELINE]:.2f}; {frame_prediction_text(predicted)}  "
        f"(report: {workdir / REPORT})"
    )
    return report
