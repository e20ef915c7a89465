"""The linear probe: separable features, top-k against a loop, train-only standardisation, `vgpt probe`."""

import json

import numpy as np
import pytest

from vgpt_jax.evaluation import probe

FAST = probe.ProbeSettings(epochs=30, learning_rate=1e-2, weight_decays=(0.0, 0.1), batch_size=64)


def clusters(num_classes: int, per_class: int, dim: int, seed: int, spread: float = 0.3):
    """Gaussian blobs around random unit-scale class centres: (N, dim) float32, labels (N,)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(num_classes, dim)) * 2.0
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels


def test_separable_features_are_probed_to_full_accuracy():
    train_x, train_y = clusters(6, 30, 10, seed=1)
    test_x, test_y = clusters(6, 10, 10, seed=2)
    result = probe.probe(train_x, train_y, test_x, test_y, 6, FAST)
    assert result["top1"] == 1.0 and result["top5"] == 1.0 and result["k"] == 5
    assert set(result["val_top1"]) == {"0.0", "0.1"} and result["weight_decay"] in (0.0, 0.1)
    # and a probe can fail: labels unrelated to the features score near chance
    shuffled = np.random.default_rng(3).permutation(test_y)
    assert probe.probe(train_x, train_y, test_x, shuffled, 6, FAST)["top1"] < 0.5


def test_top_k_against_a_loop():
    rng = np.random.default_rng(4)
    logits = rng.integers(0, 4, size=(200, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, size=200)
    for k in (1, 3, 5, 7):
        hits = 0
        for row, label in zip(logits, labels, strict=True):
            # classes ranked before the label: a higher logit, or an equal one at a lower index
            ahead = sum(1 for c in range(7) if row[c] > row[label] or (row[c] == row[label] and c < label))
            hits += ahead < k
        assert probe.top_k_accuracy(logits, labels, k) == pytest.approx(hits / 200)
    assert probe.top_k_accuracy(logits, labels, 7) == 1.0


def test_standardisation_uses_train_statistics_only():
    rng = np.random.default_rng(5)
    train, test = rng.normal(2.0, 3.0, size=(50, 4)), rng.normal(-7.0, 0.5, size=(20, 4))
    train[:, 3] = 1.5  # a constant dimension is only centred
    got_train, got_test = probe.standardise(train, test)
    mean, std = train.mean(0), train.std(0)
    std[3] = 1.0
    np.testing.assert_allclose(got_test, (test - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_train, (train - mean) / std, rtol=1e-5, atol=1e-5)

    # in the probe: a test set shifted far away is not re-centred on itself, so it collapses to
    # one side of the classifier (re-centring on test statistics would have kept it perfect)
    train_x, train_y = clusters(4, 30, 6, seed=6)
    test_x, test_y = clusters(4, 15, 6, seed=7)
    assert probe.probe(train_x, train_y, test_x, test_y, 4, FAST)["top1"] == 1.0
    shifted = probe.probe(train_x, train_y, test_x + 50.0 * np.ones(6, np.float32), test_y, 4, FAST)
    assert shifted["top1"] <= 0.5


def test_held_out_part_is_disjoint_and_seeded():
    fit, held = probe.held_out_split(50, probe.ProbeSettings(val_fraction=0.2, seed=3))
    assert len(held) == 10 and len(fit) == 40 and not set(fit) & set(held)
    assert sorted([*fit, *held]) == list(range(50))
    again = probe.held_out_split(50, probe.ProbeSettings(val_fraction=0.2, seed=3))
    assert np.array_equal(held, again[1])


def write_features_folder(folder, ids, labels, layers: dict[str, np.ndarray], meta=None):
    """A folder as `vgpt features` writes it (meta file, one npz per features name)."""
    folder.mkdir(parents=True)
    meta = meta or {
        "spec": {"layers": [1, 2], "pooling": "mean", "pooling_means": "m", "views": 1, "num_frames": 4}
    }
    (folder / "features_meta.json").write_text(json.dumps(meta))
    for name, values in layers.items():
        np.savez(
            folder / f"features_{name}.npz",
            features=values,
            video_ids=np.asarray(ids),
            labels=np.asarray(labels),
            class_names=np.asarray(["A", "B", "C"]),
            meta=np.asarray(json.dumps({**meta, "features": name})),
        )


def test_vgpt_probe_on_ucf101_split_files(tmp_path, capsys):
    from vgpt_jax import cli

    separable, labels = clusters(3, 30, 5, seed=8)
    ids = [f"{'ABC'[y]}/v_{'ABC'[y]}_g{i:02d}_c01.avi" for i, y in enumerate(labels)]
    noise = np.random.default_rng(9).normal(size=(90, 2, 5)).astype(np.float32)  # per-frame features
    folder = tmp_path / "feats"
    write_features_folder(folder, ids, labels, {"L2": separable, "L1": noise, "pixels": noise[:, 0]})
    test_rows = set(range(0, 90, 3))
    (tmp_path / "trainlist01.txt").write_text(
        "".join(f"{ids[i]} {labels[i] + 1}\r\n" for i in range(90) if i not in test_rows)
    )
    (tmp_path / "testlist01.txt").write_text(
        "".join(f"{ids[i]}\r\n" for i in sorted(test_rows)) + "C/v_C_g99_c01.avi\r\nA/v_A_g98_c01.avi\r\n"
    )
    argv = ["probe", "--features", f"trained={folder}", "--train-split", str(tmp_path / "trainlist01.txt")]
    argv += ["--test-split", str(tmp_path / "testlist01.txt"), "--epochs", "30", "--lr", "0.01"]
    argv += ["--weight-decays", "0,0.1", "--output-dir", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 videos named by the splits have no features, skipped (0 train, 2 test" in printed
    assert "pooling mean" in printed
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    run = report["runs"]["trained"]
    assert run["counts"]["train_videos"] == 60 and run["counts"]["test_videos"] == 30
    assert list(run["results"]) == ["L1", "L2", "pixels"]  # by depth, the baseline last
    assert run["results"]["L2"]["top1"] == 1.0 and run["results"]["L1"]["top1"] < 0.7
    assert run["results"]["L2"]["k"] == 3 and run["results"]["L2"]["layer"] == 2
    assert (tmp_path / "out" / "probe.png").stat().st_size > 0

    # a file of another extraction in the folder is refused
    other = {"spec": {"layers": [1], "pooling": "last", "pooling_means": "m", "views": 1, "num_frames": 4}}
    write_features_folder(tmp_path / "other", ids, labels, {"L1": noise[:, 0]}, other)
    (tmp_path / "other" / "features_L1.npz").rename(folder / "features_L1.npz")
    assert cli.main(argv) == 1
    assert "another extraction" in capsys.readouterr().err
