"""`vgpt demo` end to end on a miniature world: every stage runs, the report is complete, the
baseline is what it says it is, and a rerun skips the finished stages."""

import json

import numpy as np
import pytest
from conftest import load_experiment

from data_pipelines import video_io
from data_pipelines.array_record_source import INDEX_FILE
from vgpt_jax.demo import run as demo
from vgpt_jax.evaluation.physics_iq.layout import find_descriptions, read_descriptions


def _miniature_config():
    config = load_experiment("demo")
    config.demo.world.update(num_train=12, num_scenarios=1, size=32, train_seconds=3.0, workers=1)
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

    lines.clear()
    again = demo.run(_miniature_config(), str(tmp_path), log=lines.append)
    assert again["physics_iq"] == report["physics_iq"]
    assert not any(line.startswith("step ") or "[world]" in line for line in lines), lines
