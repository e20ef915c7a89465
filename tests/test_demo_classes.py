"""The class-to-video demo's judge: hand-built features whose classes a linear classifier separates."""

import numpy as np

from vgpt_jax.demo import classes
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
    report = classes.judge(real, train_ids, test_ids, generated, 0.0, settings)
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
    from vgpt_jax.demo import probe as probe_demo

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
