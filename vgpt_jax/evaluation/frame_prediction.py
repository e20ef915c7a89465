"""Frame-prediction evaluation: condition on the first K frames of real videos, predict P, score.

The Kinetics-600 protocol of the video-prediction literature is K = 5, P = 11 at 64x64 with FVD on
the 16-frame clips (DESIGN §9); here K, P, the frame stride and the FVD clip (conditioning +
predicted frames, or the predicted ones only) are settings, reported with every score.

Each prediction is scored by per-frame PSNR and SSIM against the true frames, and by FVD of the
predicted clips against the real ones; a copy-last-frame baseline (the last conditioning frame
held for P frames) is scored the same way, so a model's numbers always come with the numbers of
doing nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from data_pipelines import video_io
from vgpt_jax.evaluation import fvd, i3d, video_metrics
from vgpt_jax.sample.predict import Predictor, null_condition_ids

# predicts P frames after each context: ([(K, H, W, 3) uint8], P) -> [(P, H, W, 3) uint8]
PredictFn = Callable[[list[np.ndarray], int], list[np.ndarray]]

FVD_FRAMES = ("all", "pred")  # FVD over [conditioning + predicted] frames, or the predicted only
BASELINE = "copy_last_frame"


@dataclasses.dataclass(frozen=True)
class PredictionTask:
    """Condition on ``cond_frames`` frames, predict ``pred_frames``, every ``stride``-th frame."""

    cond_frames: int
    pred_frames: int
    stride: int = 1
    fvd_frames: str = "all"

    def __post_init__(self):
        for name in ("cond_frames", "pred_frames", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if self.fvd_frames not in FVD_FRAMES:
            raise ValueError(f"fvd_frames = {self.fvd_frames!r}: choose one of {', '.join(FVD_FRAMES)}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> PredictionTask:
        """From ``config.evaluation``."""
        e = config.evaluation
        return cls(e.cond_frames, e.pred_frames, e.stride, e.fvd_frames)

    @property
    def num_frames(self) -> int:
        """Frames of a task video: conditioning, then the true continuation."""
        return self.cond_frames + self.pred_frames

    @property
    def fvd_clip_frames(self) -> int:
        return self.num_frames if self.fvd_frames == "all" else self.pred_frames

    def fvd_protocol(self) -> fvd.Protocol | None:
        """The FVD protocol of the task's clips (already strided: stride 1); None if they are too
        short for I3D."""
        if self.fvd_clip_frames < i3d.MIN_FRAMES:
            return None
        return fvd.Protocol(frames=self.fvd_clip_frames)

    def describe(self) -> dict[str, Any]:
        protocol = self.fvd_protocol()
        return {
            "cond_frames": self.cond_frames,
            "pred_frames": self.pred_frames,
            "stride": self.stride,
            "fvd_frames": self.fvd_frames,
            "baseline": BASELINE,
            "fvd_protocol": None if protocol is None else protocol.describe(),
        }


def fvd_possible(task: PredictionTask, num_videos: int) -> bool:
    """Whether FVD is defined: clips of at least I3D's minimum length and 2 videos a side."""
    return task.fvd_protocol() is not None and num_videos >= 2


def copy_last_frame(context: np.ndarray, num_frames: int) -> np.ndarray:
    """The baseline: (K, H, W, 3) -> the last frame repeated, (num_frames, H, W, 3)."""
    return np.repeat(context[-1:], num_frames, axis=0)


def read_task_videos(paths: Sequence, task: PredictionTask) -> list[np.ndarray]:
    """The first K + P frames at the task's stride of each video: [(K + P, H, W, 3) uint8]."""
    fvd.check_videos(paths, task.num_frames, task.stride)
    return [fvd.read_video_frames(path, task.num_frames, task.stride) for path in paths]


def fvd_clips(videos: Sequence[np.ndarray], predictions: Sequence[np.ndarray], task: PredictionTask):
    """The clips FVD compares: [(F, H, W, 3)], the predicted frames after the conditioning ones
    (``fvd_frames = "all"``) or alone."""
    if task.fvd_frames == "pred":
        return list(predictions)
    return [np.concatenate([v[: task.cond_frames], p]) for v, p in zip(videos, predictions, strict=True)]


def frame_scores(videos: Sequence[np.ndarray], predictions: Sequence[np.ndarray], task: PredictionTask):
    """Per-frame PSNR and SSIM of each prediction against its video's true continuation:
    ``{'psnr', 'ssim'}`` each (N, P) float64."""
    scores = [
        video_metrics.frame_metrics(p, v[task.cond_frames :])
        for v, p in zip(videos, predictions, strict=True)
    ]
    return {name: np.stack([s[name] for s in scores]) for name in ("psnr", "ssim")}


def summarize(psnr: np.ndarray, ssim: np.ndarray, fvd_score: float | None) -> dict[str, Any]:
    """Means over videos and frames, the per-frame curves (averaged over videos) and the FVD.

    psnr, ssim: (N, P). A frame predicted exactly has PSNR +inf, and so has any mean over it.
    """
    return {
        "psnr": float(psnr.mean()),
        "ssim": float(ssim.mean()),
        "fvd": fvd_score,
        "psnr_per_frame": psnr.mean(axis=0).tolist(),
        "ssim_per_frame": ssim.mean(axis=0).tolist(),
    }


class PredictionEvaluator:
    """Held-out videos whose real I3D features and baseline scores are computed once, so that
    scoring a model (e.g. every few training steps) costs its predictions' features only.

    videos: [(K + P, H, W, 3) uint8], the task's frames; ``features``: the I3D feature extractor,
    or None to skip FVD.
    """

    def __init__(
        self, videos: Sequence[np.ndarray], task: PredictionTask, features: fvd.I3DFeatures | None = None
    ):
        shapes = {v.shape[0] for v in videos}
        if not videos or shapes != {task.num_frames}:
            raise ValueError(f"the evaluation needs videos of {task.num_frames} frames, got lengths {shapes}")
        self.videos, self.task = list(videos), task
        self.features = features if fvd_possible(task, len(videos)) else None
        truths = [v[task.cond_frames :] for v in self.videos]
        self.real_features = (
            None if self.features is None else self.features(fvd_clips(self.videos, truths, task))
        )
        self.baseline = self.evaluate([copy_last_frame(c, task.pred_frames) for c in self.contexts])

    @property
    def contexts(self) -> list[np.ndarray]:
        """The conditioning frames a model predicts from: [(K, H, W, 3) uint8]."""
        return [v[: self.task.cond_frames] for v in self.videos]

    def evaluate(self, predictions: Sequence[np.ndarray]) -> dict[str, Any]:
        """Scores predictions [(P, H, W, 3) uint8], one per video: see :func:`summarize`."""
        scores = frame_scores(self.videos, predictions, self.task)
        fvd_score = None
        if self.features is not None:
            generated = self.features(fvd_clips(self.videos, predictions, self.task))
            fvd_score = fvd.fvd_from_features(self.real_features, generated)
        return summarize(scores["psnr"], scores["ssim"], fvd_score)

    def report(self, model: dict[str, Any]) -> dict[str, Any]:
        """The model's numbers beside the baseline's, with the task and size warnings."""
        n = len(self.videos)
        return report(self.task, n, model, self.baseline, fvd_computed=self.features is not None)


def report(
    task: PredictionTask, num_videos: int, model: dict, baseline: dict, fvd_computed: bool
) -> dict[str, Any]:
    """The model's and the baseline's summaries with the task and the warnings that apply."""
    warnings = fvd.size_warnings(num_videos, num_videos) if fvd_computed else []
    if not fvd_computed:
        warnings.append(
            f"no FVD: it needs 2 or more videos and clips of {i3d.MIN_FRAMES} or more frames "
            f"(here {num_videos} videos of {task.fvd_clip_frames} frames), or it was switched off"
        )
    return {
        "num_videos": num_videos,
        "task": task.describe(),
        "model": model,
        BASELINE: baseline,
        "warnings": warnings,
    }


# --- a folder of videos, resumable ----------------------------------------------------------------

FEATURE_FIELDS = ("real_features", "model_features", "baseline_features")


def video_records(
    videos: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    task: PredictionTask,
    features: fvd.I3DFeatures | None,
) -> list[dict[str, np.ndarray]]:
    """Per video: PSNR and SSIM per predicted frame (P,) of the model and the baseline, and the I3D
    features (400,) of the real, predicted and baseline clips if ``features`` is given."""
    truths = [v[task.cond_frames :] for v in videos]
    baselines = [copy_last_frame(v[: task.cond_frames], task.pred_frames) for v in videos]
    model, baseline = frame_scores(videos, predictions, task), frame_scores(videos, baselines, task)
    columns = {
        "psnr": model["psnr"],
        "ssim": model["ssim"],
        "baseline_psnr": baseline["psnr"],
        "baseline_ssim": baseline["ssim"],
    }
    if features is not None:
        for name, clips in zip(FEATURE_FIELDS, (truths, predictions, baselines), strict=True):
            columns[name] = features(fvd_clips(videos, clips, task))
    return [{name: column[i] for name, column in columns.items()} for i in range(len(videos))]


def summarize_records(records: Sequence[dict[str, np.ndarray]], task: PredictionTask) -> dict[str, Any]:
    """:func:`report` of per-video records (FVD when every record has features)."""
    stacked = {name: np.stack([r[name] for r in records]) for name in records[0]}
    fvd_computed = all(name in stacked for name in FEATURE_FIELDS) and fvd_possible(task, len(records))
    model_fvd = baseline_fvd = None
    if fvd_computed:
        model_fvd = fvd.fvd_from_features(stacked["real_features"], stacked["model_features"])
        baseline_fvd = fvd.fvd_from_features(stacked["real_features"], stacked["baseline_features"])
    model = summarize(stacked["psnr"], stacked["ssim"], model_fvd)
    baseline = summarize(stacked["baseline_psnr"], stacked["baseline_ssim"], baseline_fvd)
    return report(task, len(records), model, baseline, fvd_computed)


def _record_path(output_dir: pathlib.Path, name: str) -> pathlib.Path:
    return output_dir / "records" / f"{name}.npz"


def _save_record(path: pathlib.Path, record: dict[str, np.ndarray]) -> None:
    """Written complete, then renamed: a record that exists is a finished video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **record)
    os.replace(partial, path)


def _write_prediction(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
    """(T, H, W, 3) uint8 as an MP4, odd sides cropped by one pixel (yuv420p needs even ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    video_io.write_video(str(path), frames[:, :height, :width], fps)


def evaluate_folder(
    load_predict: Callable[[], PredictFn],
    data_dir: str | pathlib.Path,
    task: PredictionTask,
    output_dir: str | pathlib.Path,
    features: fvd.I3DFeatures | None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """`vgpt predict-eval`: the task on every video under ``data_dir``, model and baseline scored.

    Writes ``videos/NAME.mp4`` (the conditioning then the predicted frames, at the input's fps /
    stride), ``records/NAME.npz`` (per-frame scores and features of one video), and from all
    records ``metrics.json``, ``per_video.csv`` and ``metrics.png``. A video whose record exists is
    not predicted again, so an interrupted run continues where it stopped. ``load_predict`` (e.g.
    loading a checkpoint) is called once the videos have been checked, and only if some are left.
    """
    root, out = pathlib.Path(data_dir), pathlib.Path(output_dir)
    paths = fvd.list_videos(root)
    fvd.check_videos(paths, task.num_frames, task.stride)
    names = [path.relative_to(root).as_posix() for path in paths]
    todo = [
        (path, name) for path, name in zip(paths, names, strict=True) if not _record_path(out, name).exists()
    ]
    predict = load_predict() if todo else None
    with tqdm(total=len(paths), initial=len(paths) - len(todo), desc="predict-eval", unit="video") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            videos = [fvd.read_video_frames(path, task.num_frames, task.stride) for path, _ in chunk]
            predictions = predict([v[: task.cond_frames] for v in videos], task.pred_frames)
            records = video_records(videos, predictions, task, features)
            for (path, name), video, predicted, record in zip(
                chunk, videos, predictions, records, strict=True
            ):
                fps = max(1, round(video_io.probe(str(path)).fps / task.stride))
                written = out / "videos" / pathlib.PurePosixPath(name).with_suffix(".mp4")
                _write_prediction(written, np.concatenate([video[: task.cond_frames], predicted]), fps)
                _save_record(_record_path(out, name), record)
            bar.update(len(chunk))
    records = []
    for name in names:
        with np.load(_record_path(out, name)) as saved:
            records.append(dict(saved))
    summary = summarize_records(records, task)
    write_outputs(summary, names, records, out)
    return summary


def write_outputs(
    summary: dict[str, Any], names: Sequence[str], records: Sequence[dict], out: pathlib.Path
) -> None:
    """metrics.json (the summary), per_video.csv (mean PSNR / SSIM per video) and metrics.png."""
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    columns = ("psnr", "ssim", "baseline_psnr", "baseline_ssim")
    with open(out / "per_video.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", *columns])
        for name, record in zip(names, records, strict=True):
            writer.writerow([name, *(f"{float(np.mean(record[c])):.6g}" for c in columns)])
    plot_per_frame(summary, out / "metrics.png")


def plot_per_frame(summary: dict[str, Any], path: pathlib.Path) -> None:
    """PSNR and SSIM against the predicted frame's index, model beside baseline (infinite PSNR, of
    frames predicted exactly, is left out of the plot)."""
    from matplotlib.figure import Figure  # Figure renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("psnr", "ssim"), strict=True):
        for name, style in (("model", "-o"), (BASELINE, "--s")):
            values = summary[name][f"{metric}_per_frame"]
            ax.plot(range(1, len(values) + 1), values, style, label=f"{name} ({summary[name][metric]:.3g})")
        ax.set(xlabel="predicted frame", ylabel=metric.upper(), title=f"{metric.upper()} per predicted frame")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


# --- inside training ------------------------------------------------------------------------------


def evaluator_from_config(config: ml_collections.ConfigDict) -> PredictionEvaluator:
    """The first ``evaluation.num_videos`` videos of ``evaluation.videos``, read for the task, with
    their real features and baseline scores computed."""
    e = config.evaluation
    if not e.videos:
        raise ValueError("train.eval_every needs held-out videos: set evaluation.videos to a video folder")
    task = PredictionTask.from_config(config)
    videos = read_task_videos(fvd.list_videos(e.videos)[: e.num_videos], task)
    return PredictionEvaluator(videos, task, fvd.I3DFeatures() if e.fvd else None)


class TrainingEvaluation:
    """Frame prediction on held-out videos during training, every ``train.eval_every`` steps.

    ``baseline_scalars()`` gives the copy-last-frame baseline's ``eval_baseline/{psnr,ssim,fvd}``
    (log them once, at step 0); calling the object with (step, state) gives the model's
    ``eval/{psnr,ssim,fvd}`` on evaluation steps and {} on the others. Every process must call it
    (sampling runs over the whole mesh).
    """

    def __init__(self, config: ml_collections.ConfigDict, tokenizer, mesh):
        self.every = config.train.eval_every
        self.evaluator = evaluator_from_config(config)
        # one predictor for the run, its params replaced each time: a new one would compile again
        self.predictor = Predictor(config, None, tokenizer, mesh)

    def baseline_scalars(self) -> dict[str, float]:
        return scalars(self.evaluator.baseline, "eval_baseline")

    def __call__(self, step: int, state) -> dict[str, float]:
        if not self.every or step % self.every:
            return {}
        self.predictor.params = state.params
        contexts = self.evaluator.contexts
        # held-out videos have no labels: a conditioned run is judged on its unconditioned prediction
        null = null_condition_ids(self.predictor.config, len(contexts))
        predictions = self.predictor.predict(contexts, self.evaluator.task.pred_frames, condition=null)
        return scalars(self.evaluator.evaluate(predictions), "eval")


def scalars(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix/psnr, prefix/ssim, prefix/fvd}`` of a summary, for metric logs (FVD if computed)."""
    return {
        f"{prefix}/{name}": summary[name] for name in ("psnr", "ssim", "fvd") if summary[name] is not None
    }
