"""`vgpt demo` end to end on a miniature world: every stage runs, the report is complete, the
baselines are what they say they are, and a rerun skips the finished stages."""

import json

import jax
import numpy as np
import pytest
from conftest import load_experiment

from data_pipelines import video_io
from data_pipelines.array_record_source import INDEX_FILE
from vgpt_jax import config as config_lib
from vgpt_jax.demo import run as demo
from vgpt_jax.demo import synthetic_physics
from vgpt_jax.evaluation.frame_prediction import PredictionTask
from vgpt_jax.evaluation.physics_iq.layout import find_descriptions, read_descriptions
from vgpt_jax.models.video_gpt import abstract_params, num_params
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.step import Trainer


def _miniature_config():
    config = load_experiment("demo")
    config.demo.world.update(num_train=12, num_scenarios=1, size=32, train_seconds=3.0, workers=1, num_eval=3)
    config.evaluation.update(cond_frames=4, pred_frames=4)
    config.demo.update(cond_frames=4, side_by_side=1)
    config.tokenizer.train.update(steps=4, log_every=2, frame_size=32, frames_per_video=4, eval_videos=2)
    config.tokenizer.train.frames_per_sample = 1  # the 8 frames of a step split over 8 fake devices
    config.data.update(num_frames=8, latent_height=4, latent_width=4, min_side=32)
    config.train.update(steps=4, log_every=2, checkpoint_every=2)
    config.sampling.update(steps=2, window_frames=8)
    return config


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports(tmp_path):
    lines = []
    report = demo.run(_miniature_config(), str(tmp_path), log=lines.append)

    saved = json.loads((tmp_path / demo.REPORT).read_text())
    assert saved == report
    assert set(report["physics_iq"]) == {demo.MODEL, demo.BASELINE}
    assert all(0.0 <= v <= 100.0 for v in report["physics_iq"].values())
    assert report["test_cases"] == 3 and report["fps"] == 8
    for name in ("loss_curves.png", "scores.png"):
        assert (tmp_path / name).stat().st_size > 1000
    (side,) = report["side_by_side"]
    assert video_io.probe(side).num_frames == 8 * 8  # 3 s of conditioning + 5 s
    assert any(line.startswith("Physics-IQ on 3 synthetic test cases") for line in lines)
    # the latents Video-GPT trained on are the trained tokenizer's (not a random one's)
    index = json.loads((tmp_path / demo.LATENTS_DIR / INDEX_FILE).read_text())
    assert index["meta"]["tokenizer_weights"] == str(demo.tokenizer_weights(tmp_path)), index["meta"]

    benchmark = tmp_path / demo.WORLD_DIR / "physics-IQ-benchmark"
    for video in read_descriptions(find_descriptions(benchmark)):
        if video.take != "take-1":
            continue
        model = tmp_path / demo.GENERATED_DIR / demo.MODEL / video.generated_name
        info = video_io.probe(str(model))
        assert (info.num_frames, info.fps, info.height, info.width) == (40, 8, 32, 32)
        # the baseline holds the conditioning video's last frame for 5 s (up to two H.264 encodings)
        conditioning = benchmark / "split-videos" / "conditioning" / "8FPS" / video.conditioning_name(8)
        last = video_io.read_frames(str(conditioning), [23])[0].astype(np.float64)
        baseline = tmp_path / demo.GENERATED_DIR / demo.BASELINE / video.generated_name
        held = video_io.read_frames(str(baseline), range(40)).astype(np.float64)
        assert np.abs(held - last).mean() < 4.0
        assert np.abs(held - held[:1]).mean(axis=(1, 2, 3)).max() < 1.0  # one frame, repeated

    _check_frame_prediction(report["frame_prediction"], tmp_path)
    assert any("frame prediction (4 -> 4 frames of 3 held-out videos)" in line for line in lines), lines[-1]

    lines.clear()
    again = demo.run(_miniature_config(), str(tmp_path), log=lines.append)
    assert again["physics_iq"] == report["physics_iq"]
    assert again["frame_prediction"] == report["frame_prediction"]
    assert not any(line.startswith("step ") or "[world]" in line for line in lines), lines


def _check_frame_prediction(predicted: dict, workdir) -> None:
    """The held-out videos are the generator's frames around the switch time, and the baseline's
    PSNR is that of the last conditioning frame against the true frames (NumPy, float64)."""
    assert predicted["num_videos"] == 3 and predicted["task"]["cond_frames"] == 4
    for name in ("model", "copy_last_frame"):
        for metric in ("psnr", "ssim"):
            assert np.isfinite(predicted[name][metric]), (name, metric, predicted[name])
        assert predicted[name]["fvd"] is None  # demo.fvd is off
    assert (workdir / demo.FRAME_PREDICTION_DIR / "metrics.png").stat().st_size > 1000

    videos = sorted((workdir / demo.WORLD_DIR / demo.HELD_OUT_DIR).glob("*.mp4"))
    assert len(videos) == 3
    frames = np.stack([video_io.read_frames(str(v), range(8)) for v in videos]).astype(np.float64)
    # video 0 is seed 1's first scene from 2.5 s (frame 20 at 8 fps): 4 frames before the switch
    # time, 4 after; of every 8-frame window of the rendered scene, that one is the nearest
    _, _, rendered = synthetic_physics.training_video(1, 0, 32, 32, 8, 5.0)
    errors = [np.abs(frames[0] - rendered[start : start + 8]).mean() for start in range(len(rendered) - 7)]
    assert np.argmin(errors) == 20, np.round(errors, 1)
    mse = np.mean(np.square(frames[:, 4:] - frames[:, 3:4]), axis=(2, 3, 4))  # (videos, 4)
    psnr = 10.0 * np.log10(255.0**2 / mse)
    baseline = predicted["copy_last_frame"]
    np.testing.assert_allclose(baseline["psnr_per_frame"], psnr.mean(axis=0), rtol=1e-4)
    assert baseline["psnr"] == pytest.approx(psnr.mean(), rel=1e-4)


def test_physics_gpu_is_the_demo_at_a_few_hundred_million_parameters():
    config = config_lib.validate(load_experiment("physics_gpu"))
    m = config.model
    # the Phi-3 layer: fused qkv and out (4 D^2), gate_up and down (3 D F), two RMSNorm scales
    layer = 4 * m.hidden_size**2 + 3 * m.hidden_size * m.mlp_dim + 2 * m.hidden_size
    total = num_params(abstract_params(config))
    assert 250e6 < total < 400e6
    assert 0 < total - m.num_layers * layer < 5e6, total  # the rest: embedders and the final layer
    assert (m.dtype, m.attention.backend, config.demo.fvd) == ("bfloat16", "auto", True)
    # the tokenizer's frames are the world's, and the latents the model's (8x downsampling)
    size = config.demo.world.size
    assert size >= 128 and config.tokenizer.train.frame_size == size
    assert (config.data.latent_height * 8, config.data.latent_width * 8) == (size, size)
    assert config.train.eval_every > 0
    assert len(demo.held_out_window(PredictionTask.from_config(config), config.demo.world.train_fps)) == 16


def test_physics_gpu_runlocal_builds():
    """``:runlocal``: tiny_cpu's model sizes, the experiment's recipe, a model that initialises."""
    local = config_lib.validate(config_lib.load_experiment("physics_gpu:runlocal"))
    tiny, full = load_experiment("tiny_cpu"), load_experiment("physics_gpu")
    sizes = ("hidden_size", "num_layers", "num_heads", "mlp_dim", "vocab_size")
    assert [local.model[k] for k in sizes] == [tiny.model[k] for k in sizes]
    assert local.optim.to_dict() == full.optim.to_dict() and local.train.to_dict() == full.train.to_dict()
    local.mesh.update(data=1)
    params = Trainer(local, make_mesh(local.mesh, jax.devices()[:1])).init().params
    assert num_params(params) == num_params(abstract_params(local))
