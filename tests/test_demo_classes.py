"""The class-to-video demo's judges (hand-built features a linear classifier separates; real motion videos
forwards and backwards) and its flags."""

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipelines import video_io
from data_pipelines.labelled_source import read_manifest
from vgpt_jax.demo import classes, physics_scenes, synthetic_physics
from vgpt_jax.demo import probe as probe_demo
from vgpt_jax.evaluation import probe as probe_lib


def _file(features: np.ndarray, labels: np.ndarray, prefix: str) -> probe_lib.FeatureFile:
    ids = np.asarray([f"{prefix}{i}" for i in range(len(labels))])
    return probe_lib.FeatureFile("L2", features, ids, labels.astype(np.int32), [], {})


def test_judge_rates_generated_sets_by_the_asked_class():
    rng = np.random.default_rng(0)
    num_classes, dim = 4, 8
    centres = 10.0 * np.eye(num_classes, dim)  # far apart: the classifier is right on every real video

    def videos(labels):
        return centres[labels] + rng.normal(size=(len(labels), dim))

    real_labels = np.repeat(np.arange(num_classes), 30)
    real = _file(videos(real_labels), real_labels, "real")
    ids = real.video_ids.tolist()
    train_ids, test_ids = ids[::2], ids[1::2]

    asked = np.repeat(np.arange(num_classes), 8)  # 32 videos, 8 a class
    # "good": every video looks like its asked class; "half": the second half of each class's
    # videos look like the next class instead, so exactly half match what was asked
    shown = asked.copy()
    shown[np.tile(np.arange(8) >= 4, num_classes)] += 1
    generated = {
        "good": _file(videos(asked), asked, "g"),
        "half": _file(videos(shown % num_classes), asked, "h"),
    }
    settings = probe_lib.ProbeSettings(epochs=200, learning_rate=1e-2, batch_size=16)
    report = classes.judge(real, train_ids, test_ids, generated, num_classes, 0.0, settings)
    assert report["real_test_accuracy"] == 1.0
    assert report["asked_class_rate"] == {"good": 1.0, "half": 0.5}
    assert report["chance"] == 0.25


def test_best_layer_is_chosen_by_held_out_accuracy_not_test():
    def result(layer, val, top1):
        return {"layer": layer, "val_top1": {"0.0": val, "0.1": val - 0.1}, "top1": top1}

    report = {
        "runs": {
            "pretrained": {
                "results": {
                    "L1": result(1, 0.6, 0.9),
                    "L2": result(2, 0.8, 0.5),
                    "pixels": {"layer": None, "val_top1": {"0.0": 0.99}, "top1": 0.99},
                }
            }
        }
    }
    assert classes.best_layer(report) == "L2"


def test_probe_seed_summary_averages_the_upper_third_of_the_layers():
    def report(pretrained, random):
        def results(top1s):
            return {f"L{i + 1}": {"layer": i + 1, "top1": t} for i, t in enumerate(top1s)}

        return {
            "runs": {
                "pretrained": {"results": results(pretrained)},
                "random_init": {"results": results(random)},
            }
        }

    # 6 layers: the upper third is layers 5 and 6
    reports = [
        report([0.1, 0.2, 0.3, 0.4, 0.5, 0.7], [0.9, 0, 0, 0, 0.2, 0.4]),
        report([0] * 4 + [0.6, 0.8], [0.3] * 6),
    ]
    summary = probe_demo.seed_summary(reports, 6)
    assert summary["upper_layers"] == [5, 6] and summary["seeds"] == 2
    np.testing.assert_allclose(summary["pretrained"]["upper_mean_top1"], [0.6, 0.7])
    np.testing.assert_allclose(summary["pretrained"]["best_top1"], [0.7, 0.8])
    np.testing.assert_allclose(summary["random_init"]["upper_mean_top1"], [0.3, 0.3])
    np.testing.assert_allclose(summary["random_init"]["best_top1_over_seeds"], 0.6)
    assert probe_demo.upper_layers(24) == list(range(17, 25))


def test_motion_judge_rates_real_videos_forwards_right_and_backwards_wrong(tmp_path):
    kinds = physics_scenes.CLASS_WORLDS["motion"]
    root = Path(synthetic_physics.write_training_set(str(tmp_path), 8, 32, 32, 3, 8, 4.0, kinds=kinds))
    real = root / synthetic_physics.LABELS_FILE
    # "generated" videos: the real ones as 16 consecutive frames (what a class run learns from 32 at
    # interval 2), asked for their own class, forwards (all right) and backwards (all wrong: the
    # opposite direction)
    generated = {}
    for name, order in (("forwards", slice(None)), ("backwards", slice(None, None, -1))):
        folder = tmp_path / name
        folder.mkdir()
        rows = []
        for i, video in enumerate(read_manifest(str(real)).videos):
            frames = video_io.read_frames(video.path, range(0, 32, 2))[order]
            video_io.write_video(str(folder / f"{i}.mp4"), frames, 8)
            rows.append(json.dumps({"video": f"{i}.mp4", "label": video.label}))
        generated[name] = folder / "asked.jsonl"
        generated[name].write_text("\n".join(rows) + "\n")
    report = classes.judge_motion(real, generated, 16)
    assert report == {
        "real_test_accuracy": 1.0,
        "asked_class_rate": {"forwards": 1.0, "backwards": 0.0},
        "chance": 0.25,
    }


def test_world_flag_reaches_the_runs_and_their_folders(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(classes, "run", lambda *args, **kwargs: calls.append(("classes", kwargs["world"])))
    monkeypatch.setattr(probe_demo, "run", lambda *args, **kwargs: calls.append(("probe", kwargs["world"])))
    classes.main(["--workdir", str(tmp_path), "--world", "motion"])
    classes.main(["--workdir", str(tmp_path)])
    probe_demo.main(["--workdir", str(tmp_path), "--world", "motion"])
    assert calls == [("classes", "motion"), ("classes", "kinds"), ("probe", "motion")]
    with pytest.raises(SystemExit):
        classes.main(["--workdir", str(tmp_path), "--world", "colours"])
    # the kinds' folders stay where the published runs have them; another world's go in a subfolder
    assert probe_demo.world_dir(tmp_path, "kinds") == tmp_path
    assert probe_demo.world_dir(tmp_path, "motion") == tmp_path / "motion"


def test_class_runs_on_the_motion_world_train_on_the_sampler_clips():
    config = probe_demo.pretrain_config()  # the CPU demo: 16 frames, sampled in clips of 4
    assert classes.world_recipe("kinds", config) == (config.train.steps, [])
    steps, recipe = classes.world_recipe("motion", config)
    assert steps == classes.MOTION_STEPS
    assert recipe == ["layout.partition=fixed", "layout.fixed_partition=(4, 4, 4, 4)", "data.worker_count=1"]
