"""Frame-prediction evaluation: the baseline, an oracle that predicts the truth, resumable folders,
and `vgpt predict-eval` on a tiny checkpoint."""

import json

import numpy as np
import pytest
import video_metrics_reference as ref
from real_footage import camera_clips

from data_pipelines import video_io
from vgpt_jax.evaluation import frame_prediction, fvd

TASK = frame_prediction.PredictionTask(cond_frames=4, pred_frames=5)  # 9 frames: I3D's minimum


def _mean_pixel(variables, clips, resize):
    """A stand-in for the I3D network: each clip's mean pixel value, (B, 3)."""
    return clips.mean(axis=(1, 2, 3)).astype(float)


@pytest.fixture
def stub_features(monkeypatch):
    monkeypatch.setattr(fvd, "_logits", _mean_pixel)
    return fvd.I3DFeatures(variables={}, per_device_batch=1)


@pytest.fixture(scope="module")
def videos():
    """Camera footage: 9 frames of bikes (272x640) and of carphone (144x176)."""
    return camera_clips(frames=TASK.num_frames)


def oracle(videos):
    """A predictor that returns each context's true continuation."""
    truth = {v[: TASK.cond_frames].tobytes(): v[TASK.cond_frames :] for v in videos}
    return lambda contexts, num_frames: [truth[c.tobytes()][:num_frames] for c in contexts]


def test_task_settings():
    assert TASK.num_frames == 9 and TASK.fvd_protocol().frames == 9
    assert frame_prediction.PredictionTask(5, 11, fvd_frames="pred").fvd_protocol().frames == 11
    assert frame_prediction.PredictionTask(2, 3).fvd_protocol() is None  # too short for I3D
    with pytest.raises(ValueError, match="pred_frames = 0"):
        frame_prediction.PredictionTask(2, 0)
    with pytest.raises(ValueError, match="all, pred"):
        frame_prediction.PredictionTask(2, 3, fvd_frames="cond")


def test_copy_last_frame_holds_the_last_conditioning_frame(videos):
    held = frame_prediction.copy_last_frame(videos[0][:4], 5)
    assert held.shape == (5, *videos[0].shape[1:])
    assert all(np.array_equal(frame, videos[0][3]) for frame in held)


def test_oracle_scores_perfectly_and_the_baseline_does_not(videos, stub_features):
    evaluator = frame_prediction.PredictionEvaluator(videos, TASK, stub_features)
    model = evaluator.evaluate(oracle(videos)(evaluator.contexts, TASK.pred_frames))
    assert model["psnr"] == np.inf and model["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert abs(model["fvd"]) < 1e-9
    baseline = evaluator.baseline
    # the baseline's k-th predicted frame is the last conditioning frame against true frame K + k
    want = [np.mean([ref.psnr(v[3], v[4 + k]) for v in videos]) for k in range(5)]
    np.testing.assert_allclose(baseline["psnr_per_frame"], want, rtol=1e-5)
    assert baseline["psnr"] < 40 and baseline["ssim"] < 0.99 and baseline["fvd"] > 1e-3
    report = evaluator.report(model)
    assert report["num_videos"] == 2 and report["task"]["cond_frames"] == 4
    assert frame_prediction.scalars(model, "eval") == {
        "eval/psnr": np.inf,
        "eval/ssim": model["ssim"],
        "eval/fvd": model["fvd"],
    }


def test_folder_evaluation_writes_everything_and_resumes(videos, stub_features, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for name, video in zip(("bikes.mp4", "phone.mp4"), videos, strict=True):
        video_io.write_video(str(data / name), video, fps=10)
    decoded = [fvd.read_video_frames(data / name, TASK.num_frames) for name in ("bikes.mp4", "phone.mp4")]
    calls = []

    def load():
        calls.append("load")
        predict = oracle(decoded)
        return lambda contexts, n: calls.append(len(contexts)) or predict(contexts, n)

    summary = frame_prediction.evaluate_folder(load, data, TASK, out, stub_features)
    assert calls == ["load", 2]
    assert summary["model"]["psnr"] == np.inf and summary["copy_last_frame"]["psnr"] < 40
    assert abs(summary["model"]["fvd"]) < 1e-9 < summary["copy_last_frame"]["fvd"]
    assert json.loads((out / "metrics.json").read_text())["num_videos"] == 2
    assert (out / "per_video.csv").read_text().splitlines()[
        0
    ] == "video,psnr,ssim,baseline_psnr,baseline_ssim"
    assert (out / "metrics.png").stat().st_size > 0
    assert video_io.probe(str(out / "videos" / "phone.mp4")).num_frames == TASK.num_frames

    calls.clear()
    frame_prediction.evaluate_folder(load, data, TASK, out, stub_features)
    assert calls == []  # every video has its record: nothing is loaded or predicted
    (out / "records" / "bikes.mp4.npz").unlink()
    again = frame_prediction.evaluate_folder(load, data, TASK, out, stub_features)
    assert calls == ["load", 1] and again["model"] == summary["model"]


def test_folder_evaluation_names_short_videos_before_loading(tmp_path):
    video_io.write_video(str(tmp_path / "short.mp4"), np.zeros((6, 16, 16, 3), np.uint8), fps=10)
    with pytest.raises(ValueError, match=r"cannot give 9 frames .*short.mp4 \(6 frames\)"):
        frame_prediction.evaluate_folder(pytest.fail, tmp_path, TASK, tmp_path / "out", None)


@pytest.mark.slow
def test_oracle_fvd_is_zero_and_the_baseline_positive_with_i3d(videos):
    evaluator = frame_prediction.PredictionEvaluator(videos, TASK, fvd.I3DFeatures())
    model = evaluator.evaluate(oracle(videos)(evaluator.contexts, TASK.pred_frames))
    assert abs(model["fvd"]) < 1e-6
    assert evaluator.baseline["fvd"] > 1.0


@pytest.mark.slow
def test_vgpt_predict_eval_on_a_tiny_checkpoint(tmp_path):
    from inference_fixture import moving_square, shared_checkpoints

    from vgpt_jax import cli

    data = tmp_path / "data"
    data.mkdir()
    video_io.write_video(str(data / "square.mp4"), moving_square(8, 64, 64), fps=10)
    video_io.write_video(str(data / "wide.mp4"), moving_square(8, 40, 56), fps=10)
    argv = [
        "--checkpoint",
        str(shared_checkpoints()[1]),
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert cli.main(["predict-eval", *argv, "--cond-frames", "2", "--pred-frames", "3", "--no-fvd"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_videos"] == 2 and metrics["model"]["fvd"] is None
    assert np.isfinite(metrics["model"]["psnr"]) and len(metrics["model"]["ssim_per_frame"]) == 3
    assert "no FVD" in metrics["warnings"][0]
    assert video_io.probe(str(tmp_path / "out" / "videos" / "wide.mp4")).num_frames == 5


@pytest.mark.slow
def test_training_evaluation_hook_on_a_tiny_checkpoint(tmp_path):
    from types import SimpleNamespace

    from inference_fixture import moving_square, shared_checkpoints

    from vgpt_jax.checkpoint.inference import load_for_inference

    config, params, tokenizer = load_for_inference(shared_checkpoints()[0])
    config.train.eval_every = 5
    config.evaluation.update(cond_frames=2, pred_frames=3, num_videos=2, fvd=False)
    with pytest.raises(ValueError, match="set evaluation.videos"):
        frame_prediction.TrainingEvaluation(config, tokenizer, tokenizer.mesh)
    for i in range(3):  # the third is beyond num_videos
        video_io.write_video(str(tmp_path / f"{i}.mp4"), moving_square(6 + i, 64, 64), fps=10)
    config.evaluation.videos = str(tmp_path)
    evaluation = frame_prediction.TrainingEvaluation(config, tokenizer, tokenizer.mesh)
    assert len(evaluation.evaluator.videos) == 2
    assert set(evaluation.baseline_scalars()) == {"eval_baseline/psnr", "eval_baseline/ssim"}
    state = SimpleNamespace(params=params)
    assert evaluation(4, state) == {}
    logged = evaluation(10, state)
    assert set(logged) == {"eval/psnr", "eval/ssim"} and all(np.isfinite(v) for v in logged.values())
