"""Physics-IQ scoring: hand-computed metrics, an independent float64 NumPy reference of the whole
score written from PHYSICS_IQ_SPEC.md, the benchmark's anchors, and the bad-input errors."""

import ast
import csv
import hashlib
import json
import shutil

import cv2
import numpy as np
import physics_iq_fixture as fx
import pytest

from vgpt_jax.evaluation.physics_iq import command
from vgpt_jax.evaluation.physics_iq import score as scoring
from vgpt_jax.evaluation.physics_iq.aggregate import physics_iq as aggregate
from vgpt_jax.evaluation.physics_iq.layout import find_descriptions
from vgpt_jax.evaluation.physics_iq.masks import motion_masks, write_mask_video
from vgpt_jax.evaluation.physics_iq.metrics import frame_mse, iou, view_metrics, weighted_spatial_iou
from vgpt_jax.evaluation.physics_iq.video import probe

SCORE_KEYS = (
    "physics_iq",
    "physics_iq_raw",
    "spatiotemporal_iou",
    "spatial_iou",
    "weighted_spatial_iou",
    "mse",
    "physical_variance_spatiotemporal_iou",
    "physical_variance_spatial_iou",
    "physical_variance_weighted_spatial_iou",
    "physical_variance_mse",
)


# ----------------------------------------------------------------------------------------------
# Independent reference, float64 NumPy, from the spec. OpenCV only decodes and encodes videos (the
# lossy mp4v round trip of the masks is part of the metric, spec Q1); the image operations are
# re-derived: OpenCV's fixed-point grey conversion, its 5×5 Gaussian for sigma 0 ([1 4 6 4 1]/16),
# and INTER_LINEAR at an even integer factor (the mean of the 2×2 pixels around each output pixel's
# centre, rounded half up).
# ----------------------------------------------------------------------------------------------


def ref_decode(path, count=None):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while count is None or len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert frames and (count is None or len(frames) == count), path
    return frames


def ref_grey(bgr):
    b, g, r = (bgr[..., i].astype(np.int64) for i in range(3))
    return (3735 * b + 19235 * g + 9798 * r + (1 << 14)) >> 15


def ref_blur(grey):
    k = np.array([1, 4, 6, 4, 1])
    h, w = grey.shape
    padded = np.pad(grey, 2, mode="reflect")  # NumPy's "reflect" is OpenCV's default BORDER_REFLECT_101
    rows = sum(k[i] * padded[:, i : i + w] for i in range(5))
    return (sum(k[i] * rows[i : i + h] for i in range(5)) + 128) >> 8


def ref_window(mask, reduce, pad_value):
    h, w = mask.shape
    padded = np.pad(mask, 2, constant_values=pad_value)  # the border never wins
    return reduce([padded[i : i + h, j : j + w] for i in range(5) for j in range(5)], axis=0)


def ref_masks(frames):
    """Spec §5, steps 2–3."""
    masks, background = [], None
    for frame in frames:
        grey = ref_blur(ref_grey(frame)).astype(np.float64)
        if background is None:
            background = grey
            masks.append(np.zeros(grey.shape, np.uint8))
            continue
        background = 0.7 * background + 0.3 * grey
        rounded = np.clip(np.rint(background.astype(np.float32)), 0, 255)  # float32, half to even
        mask = np.where(np.abs(grey - rounded) > 10, 255, 0).astype(np.uint8)
        opened = ref_window(ref_window(mask, np.min, 255), np.max, 0)
        masks.append(ref_window(ref_window(opened, np.max, 0), np.min, 255))
    return masks


def ref_mask_video(video, path):
    """Spec §5 step 4: grayscale mp4v at round(fps), written and decoded again."""
    fps = round(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS))
    masks = ref_masks(ref_decode(video))
    h, w = masks[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h), False)
    for mask in masks:
        writer.write(mask)
    writer.release()
    return path


def ref_resize(image, size):
    w, h = size
    fy, fx = image.shape[0] // h, image.shape[1] // w
    assert image.shape[:2] == (fy * h, fx * w) and fx % 2 == 0 and fy % 2 == 0
    x = image.astype(np.int64)
    rows = x[fy // 2 - 1 :: fy][:h] + x[fy // 2 :: fy][:h]
    return (rows[:, fx // 2 - 1 :: fx][:, :w] + rows[:, fx // 2 :: fx][:, :w] + 2) >> 2


def ref_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def ref_case(real1, real2, generated, mask1, mask2, mask_generated, n):
    """Spec §6 for one view."""
    first = ref_decode(real1, 1)[0]
    size = (first.shape[1] // 4, first.shape[0] // 4)
    r1, r2, g = ([ref_resize(f, size) / 255.0 for f in ref_decode(p, n)] for p in (real1, real2, generated))
    m1, m2, mg = (
        [ref_resize(f, size) > 127 for f in ref_decode(p, n)] for p in (mask1, mask2, mask_generated)
    )

    def mse(a, b):
        return [
            float(np.mean((x.astype(np.float32) - y.astype(np.float32)) ** 2))
            for x, y in zip(a, b, strict=True)
        ]

    def weighted(a, b):
        wa, wb = np.mean(a, axis=0), np.mean(b, axis=0)
        union = np.maximum(wa, wb).sum()
        return 1.0 if union == 0 else np.minimum(wa, wb).sum() / union

    return {
        "v1_mse": mse(r1, g),
        "variance_mse": mse(r1, r2),
        "spatiotemporal_iou_v1": [ref_iou(a, b) for a, b in zip(m1, mg, strict=True)],
        "variance_spatiotemporal_iou": [ref_iou(a, b) for a, b in zip(m1, m2, strict=True)],
        "spatial_iou_v1": ref_iou(np.any(m1, 0), np.any(mg, 0)),
        "variance_spatial": ref_iou(np.any(m1, 0), np.any(m2, 0)),
        "weighted_spatial_iou_v1": weighted(m1, mg),
        "variance_weighted_spatial": weighted(m1, m2),
    }


def ref_score(results):
    """Spec §7. results: scenario -> view -> ref_case; round() of the means is NumPy's, as in the
    benchmark (its means are NumPy floats)."""

    def r4(values):
        return [round(v, 4) for v in values]

    def by_view(name):
        return [[row[v][name] for row in results.values() if v in row] for v in fx.VIEWS]

    def list_mean(name):  # per scenario over its views, then over scenarios
        return np.mean([np.mean([x for m in row.values() for x in r4(m[name])]) for row in results.values()])

    def view_mean(name):  # per view over scenarios, then over views
        return np.mean([np.mean(column) for column in by_view(name) if column])

    def variance_of_lists(name):
        return np.mean(
            [np.mean([x for values in column for x in r4(values)]) for column in by_view(name) if column]
        )

    st, mse = list_mean("spatiotemporal_iou_v1"), list_mean("v1_mse")
    sp, ws = view_mean("spatial_iou_v1"), view_mean("weighted_spatial_iou_v1")
    pv_st = round(variance_of_lists("variance_spatiotemporal_iou"), 4)
    pv_mse = round(variance_of_lists("variance_mse"), 4)
    pv_sp, pv_ws = round(view_mean("variance_spatial"), 5), round(view_mean("variance_weighted_spatial"), 4)
    raw = 100 * ((st / pv_st + sp / pv_sp + ws / pv_ws) / 3 - (mse - pv_mse))
    return dict(
        zip(
            SCORE_KEYS,
            (round(float(np.clip(raw, 0, 100)), 2), raw, st, sp, ws, mse, pv_st, pv_sp, pv_ws, pv_mse),
            strict=True,
        )
    )


def reference(bench, generated_dir, fps, ids, work, shipped_masks):
    """(scores, scenario -> view -> metrics) of the reference for the take-1 IDs `ids`."""
    testing = bench / "split-videos" / "testing" / f"{fps}FPS"
    results = {}
    for ident, s, scenario, view in fx.all_cases():
        if ident not in ids:
            continue
        names = [f"{fx.video_id(s, view, t)}_{{}}_{fps}FPS_{view}_{t}_{scenario}" for t in fx.TAKES]
        reals = [testing / name.format("testing-videos") for name in names]
        generated = generated_dir / f"{ident}_{view}_{scenario}"
        if shipped_masks:
            masks = [bench / "video-masks" / "real" / f"{fps}FPS" / n.format("video-masks") for n in names]
        else:
            masks = [ref_mask_video(real, work / f"{real.stem}.mask.mp4") for real in reals]
        mask_generated = ref_mask_video(generated, work / f"{ident}.generated-mask.mp4")
        metrics = ref_case(*reals, generated, *masks, mask_generated, 5 * fps)
        results.setdefault(scenario, {})[view] = metrics
    return ref_score(results), results


# ----------------------------------------------------------------------------------------------
# Hand-computed metrics
# ----------------------------------------------------------------------------------------------


def test_iou_by_hand():
    a = np.array([[1, 1], [0, 0]])
    assert iou(a, np.array([[1, 0], [1, 0]])) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0
    assert iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # nothing moves in either: full credit (Q13)
    assert iou(a, np.zeros((2, 2))) == 0.0


@pytest.mark.parametrize("moving_only", [True, False])
def test_weighted_spatial_iou_by_hand(moving_only):
    # 2 frames. Motion frequencies W = counts / 2: a = [1, 0, .5, 0], b = [.5, .5, 0, 0].
    # Σ min = .5, Σ max = 1 + .5 + .5 = 2.
    a, b = np.array([2, 0, 1, 0], np.uint16), np.array([1, 1, 0, 0], np.uint16)
    assert weighted_spatial_iou(a, b, 2, moving_only=moving_only) == 0.25
    none = np.zeros(4, np.uint16)
    assert weighted_spatial_iou(none, none, 2, moving_only=moving_only) == 1.0


def test_frame_mse_is_float32_by_hand():
    assert frame_mse(np.zeros((2, 2, 3)), np.full((2, 2, 3), 0.5)) == 0.25
    # 0.1 is not a float32: the squared difference is float32(0.1)², not 0.01 (spec Q12).
    assert frame_mse(np.full((1, 1, 3), 0.1), np.zeros((1, 1, 3))) == float(np.float32(0.1) ** 2) != 0.01


def test_view_metrics_by_hand():
    # 2 frames of 2 pixels (one channel). Masks: take 1 moves in both pixels at t=1, take 2 in the
    # first, the generation in the second; frame 0 is empty everywhere (as every mask's frame 0).
    empty = np.array([[[0], [0]]], np.uint8)
    m1, m2, mg = (np.array([[[a], [b]]], np.uint8) for a, b in ((1, 1), (1, 0), (0, 1)))
    videos = [[np.full((1, 2, 1), v)] * 2 for v in (0.0, 0.5, 1.0)]  # take 1, take 2, generated
    out = view_metrics(*videos, [empty, m1], [empty, m2], [empty, mg])
    assert out == {
        "v1_mse": [1.0, 1.0],
        "v2_mse": [0.25, 0.25],
        "variance_spatial": 0.5,  # moved: take 1 {0, 1}, take 2 {0}
        "variance_weighted_spatial": 0.5,  # W1 = [.5, .5], W2 = [.5, 0]
        "variance_spatiotemporal_iou": [1.0, 0.5],
        "variance_mse": [0.25, 0.25],
        "spatiotemporal_iou_v1": [1.0, 0.5],
        "spatiotemporal_iou_v2": [1.0, 0.0],
        "spatial_iou_v1": 0.5,
        "spatial_iou_v2": 0.0,
        "weighted_spatial_iou_v1": 0.5,  # Wg = [0, .5]: Σ min = .5, Σ max = 1
        "weighted_spatial_iou_v2": 0.0,
    }


def _view(st, mse, sp, ws, vst, vmse, vsp, vws):
    return {
        "spatiotemporal_iou_v1": st,
        "v1_mse": mse,
        "spatial_iou_v1": sp,
        "weighted_spatial_iou_v1": ws,
        "variance_spatiotemporal_iou": vst,
        "variance_mse": vmse,
        "variance_spatial": vsp,
        "variance_weighted_spatial": vws,
    }


def test_score_by_hand():
    """Two scenarios, three view columns with a gap (scenario a has no center view)."""
    left, center = fx.VIEWS[:2]
    results = {
        "a.mp4": {
            left: _view([1.0, 0.55554], [0.00104, 0.0], 0.5, 0.25, [1.0, 0.8], [0.0025, 0.0], 0.7, 0.5)
        },
        "b.mp4": {
            left: _view([1.0, 0.5], [0.002, 0.002], 0.7, 0.35, [1.0, 0.6], [0.0025, 0.0], 0.912345, 0.7),
            center: _view([0.0, 0.0], [0.0, 0.0], 0.1, 0.1, [1.0, 1.0], [0.0025, 0.0], 0.5, 0.5),
        },
    }
    s = aggregate(results)
    # Per-frame values rounded to 4 dp first: 0.55554 -> 0.5555, 0.00104 -> 0.001.
    assert s.spatiotemporal_iou == pytest.approx(((1 + 0.5555) / 2 + 1.5 / 4) / 2, abs=1e-15)
    assert s.mse == pytest.approx((0.001 / 2 + 0.004 / 4) / 2, abs=1e-15)
    assert s.spatial_iou == pytest.approx(((0.5 + 0.7) / 2 + 0.1) / 2, abs=1e-15)
    assert s.weighted_spatial_iou == pytest.approx(((0.25 + 0.35) / 2 + 0.1) / 2, abs=1e-15)
    assert s.physical_variance_spatiotemporal_iou == 0.925  # (3.4 / 4 + 1) / 2
    assert s.physical_variance_spatial_iou == 0.65309  # 0.65308625, to 5 dp
    assert s.physical_variance_weighted_spatial_iou == 0.55  # ((0.5 + 0.7) / 2 + 0.5) / 2
    # 0.00125 is a tie: NumPy's round (the benchmark's) goes to even, Python's round() to 0.0013.
    assert s.physical_variance_mse == 0.0012
    raw = ((0.576375 / 0.925 + 0.35 / 0.65309 + 0.2 / 0.55) / 3 - (0.00075 - 0.0012)) * 100
    assert s.physics_iq_raw == pytest.approx(raw, rel=1e-12)
    assert s.physics_iq == round(raw, 2) == 50.8

    # No motion where the takes move, large error: the raw score is negative and clips to 0.
    bad = {"a.mp4": {left: _view([0.0], [0.5], 0.0, 0.0, [1.0], [0.001], 0.7, 0.5)}}
    assert aggregate(bad).physics_iq_raw == pytest.approx(-49.9) and aggregate(bad).physics_iq == 0.0
    undefined = {"a.mp4": {left: _view([0.0], [0.5], 0.0, 0.0, [1.0], [0.001], 0.0, 0.5)}}
    with pytest.raises(ValueError, match="spatial IoU is 0"):
        aggregate(undefined)


# ----------------------------------------------------------------------------------------------
# Masks against the reference
# ----------------------------------------------------------------------------------------------


def test_motion_masks_match_the_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    scene = [fx.render("ball-drop.mp4", "perspective-left", "take-1", 3.2 + k / 8) for k in range(12)]
    # Smooth random fields hit every branch: thresholds, background rounding ties, odd sizes.
    noisy = [
        np.clip(128 + rng.normal(0, 18, (29, 37, 3)).cumsum(1) / 3, 0, 255).astype(np.uint8)
        for _ in range(12)
    ]
    for frames in (scene, noisy):
        ours = list(motion_masks(frames))
        expected = ref_masks(frames)
        assert not ours[0].any()
        assert all(np.array_equal(a, b) for a, b in zip(ours, expected, strict=True))
        assert sum(int(m.any()) for m in ours) >= 5  # the frames do move


def test_mask_video_is_mp4v_with_even_size(tmp_path):
    frames = [
        fx.render("ball-roll.mp4", "perspective-center", "take-1", 3 + k / 8, size=(65, 49))
        for k in range(16)
    ]
    video = fx.write_video(tmp_path / "odd.mp4", frames, 8)
    write_mask_video(video, tmp_path / "mask.mp4")
    info = probe(tmp_path / "mask.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 16, 8.0)
    assert not list(tmp_path.glob("*partial*"))


# ----------------------------------------------------------------------------------------------
# The whole scorer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return fx.build_benchmark(tmp_path_factory.mktemp("physics_iq"))


def _csv_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        row["scenario"]: {k: ast.literal_eval(v) for k, v in row.items() if k != "scenario" and v}
        for row in rows
    }


def _assert_matches_reference(out_dir, summary, expected, expected_results):
    for key in SCORE_KEYS:
        assert summary[key] == pytest.approx(expected[key], abs=1e-6), key
    assert json.loads((out_dir / "scores.json").read_text()) == summary
    rows = _csv_rows(out_dir / "per_video.csv")
    assert list(rows) == list(expected_results)
    for scenario, views in expected_results.items():
        for view, metrics in views.items():
            for name, value in metrics.items():
                assert rows[scenario][f"{name}_{view}"] == pytest.approx(value, abs=1e-12), (
                    scenario,
                    view,
                    name,
                )


def test_score_equals_the_reference_with_computed_masks(bench, tmp_path):
    """16 fps (no shipped masks): a model 0.25 s late, every test case, two worker processes."""
    generated = fx.rendered(tmp_path / "late", 16, delay_s=0.25)
    summary = scoring.score(bench, generated, tmp_path / "out", workers=2)
    ids = [case[0] for case in fx.all_cases()]
    expected, results = reference(bench, generated, 16, ids, tmp_path, shipped_masks=False)
    _assert_matches_reference(tmp_path / "out", summary, expected, results)
    assert summary["real_masks"] == "computed" and summary["complete"] and summary["scored_ids"] == ids
    assert set(summary["categories"]) == {"Solid Mechanics", "Fluid Dynamics"}
    assert (tmp_path / "out" / "physics_iq.png").read_bytes()[:4] == b"\x89PNG"


def test_score_equals_the_reference_on_a_subset_with_shipped_masks(bench, tmp_path):
    """8 fps: shipped real masks, a scenario with 2 of its 3 views, generations at twice the size."""
    ids = {"0001", "0002", "0004", "0005", "0006"}
    generated = fx.rendered(tmp_path / "late", 8, delay_s=0.1, size=(128, 96), ids=ids)
    summary = scoring.score(bench, generated, tmp_path / "out", workers=1)
    expected, results = reference(bench, generated, 8, ids, tmp_path, shipped_masks=True)
    _assert_matches_reference(tmp_path / "out", summary, expected, results)
    assert summary["scored_ids"] == sorted(ids) and summary["num_videos"] == 5
    assert not summary["complete"] and summary["num_test_cases"] == 9
    assert summary["scored_scenarios"] == ["ball-drop.mp4", "ball-roll.mp4"]
    assert summary["real_masks"].endswith("video-masks/real/8FPS")


def _snapshot(*folders):
    files = (p for d in folders for p in sorted(d.rglob("*")) if p.is_file())
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_anchors_and_inputs_untouched(bench, tmp_path):
    """Take 2 scores 100 ± 0.01, a copy of take 1 above 100 before clipping, a frozen switch frame
    far lower; no input file is renamed or changed."""
    take2 = fx.real_take(bench, tmp_path / "take2", 16, "take-2")
    take1 = fx.real_take(bench, tmp_path / "take1", 16, "take-1")
    frozen = fx.repeated_switch_frame(bench, tmp_path / "frozen", 16)
    before = _snapshot(bench, take2, take1, frozen)

    as_take2 = scoring.score(bench, take2, tmp_path / "out2", workers=1)
    assert abs(as_take2["physics_iq_raw"] - 100) <= 0.01
    as_take1 = scoring.score(bench, take1, tmp_path / "out1", workers=1)
    assert as_take1["physics_iq_raw"] > 100 and as_take1["physics_iq"] == 100.0
    assert (
        as_take1["spatiotemporal_iou"] == as_take1["spatial_iou"] == as_take1["weighted_spatial_iou"] == 1.0
    )
    as_frozen = scoring.score(bench, frozen, tmp_path / "out3", workers=1)
    assert as_frozen["physics_iq"] < 50 and as_frozen["spatial_iou"] == 0.0
    assert _snapshot(bench, take2, take1, frozen) == before


def test_changed_videos_are_never_scored_with_cached_masks(bench, tmp_path):
    """Same file names, new content, same output folder: the score is the fresh one."""
    ids = {"0001", "0002", "0003"}
    generated = fx.real_take(bench, tmp_path / "gen", 8, "take-2", ids=ids)
    first = scoring.score(bench, generated, tmp_path / "out", workers=1)
    cached = sorted((tmp_path / "out" / "mask_cache").rglob("*.mp4"))
    assert scoring.score(bench, generated, tmp_path / "out", workers=1) == first
    assert sorted((tmp_path / "out" / "mask_cache").rglob("*.mp4")) == cached  # unchanged videos: reused

    shutil.rmtree(generated)
    fx.rendered(generated, 8, delay_s=0.5, ids=ids)
    again = scoring.score(bench, generated, tmp_path / "out", workers=1)
    fresh = scoring.score(bench, generated, tmp_path / "fresh", workers=1)
    assert again == fresh != first


def test_longer_video_warns_and_scores_its_first_5_seconds(bench, tmp_path):
    name = "0002_perspective-center_ball-drop.mp4"
    frames = [fx.render("ball-drop.mp4", "perspective-center", "take-2", 3 + k / 8) for k in range(48)]
    fx.write_video(tmp_path / "exact" / name, frames[:40], 8)
    fx.write_video(tmp_path / "long" / name, frames, 8)
    expected = scoring.score(bench, tmp_path / "exact", tmp_path / "out_exact", workers=1)
    with pytest.warns(UserWarning, match="longer than 5 s"):
        assert scoring.score(bench, tmp_path / "long", tmp_path / "out_long", workers=1) == expected


def test_a_video_at_another_resolution_warns(bench, tmp_path):
    name = "0002_perspective-center_ball-drop.mp4"
    frames = [fx.render("ball-drop.mp4", "perspective-center", "take-2", 3 + k / 8) for k in range(40)]
    real = probe(next((bench / "split-videos" / "testing" / "8FPS").glob("*.mp4")))
    small = [cv2.resize(f, (real.width // 2, real.height // 2)) for f in frames]
    fx.write_video(tmp_path / "small" / name, small, 8)
    size = f"{real.width // 2}x{real.height // 2} against {real.width}x{real.height}"
    want = f"1 generated videos are not at their real video's resolution .*{size}"
    with pytest.warns(UserWarning, match=want):
        scoring.score(bench, tmp_path / "small", tmp_path / "out", workers=1)


def test_cli_writes_the_outputs(bench, tmp_path, capsys):
    generated = fx.real_take(bench, tmp_path / "gen", 8, "take-2", ids={"0004", "0005", "0006"})
    argv = [
        "score",
        "--data-dir",
        str(bench),
        "--generated-dir",
        str(generated),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert command.main([*argv, "--fps", "8", "--workers", "1"]) == 0
    assert "PARTIAL" in capsys.readouterr().out
    scores = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert set(SCORE_KEYS) | {"num_videos", "fps", "scored_ids", "categories"} <= set(scores)
    assert (scores["fps"], scores["num_videos"]) == (8, 3)
    header = (tmp_path / "o" / "per_video.csv").read_text().splitlines()[0].split(",")
    assert (
        header[:3] == ["scenario", "v1_mse_perspective-left", "v2_mse_perspective-left"] and len(header) == 37
    )
    assert (tmp_path / "o" / "physics_iq.png").stat().st_size > 0

    assert command.main([*argv, "--fps", "16"]) == 1
    assert "--fps 16" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Where descriptions.csv is read from: the data folder, the benchmark repository beside it, a flag
# ----------------------------------------------------------------------------------------------


def _data_folder_without_descriptions(bench, root):
    """root/physics-IQ-benchmark: the benchmark's folders (linked) without descriptions/, as the
    benchmark's download script writes it."""
    data = root / "physics-IQ-benchmark"
    data.mkdir(parents=True)
    for entry in bench.iterdir():
        if entry.name != "descriptions":
            (data / entry.name).symlink_to(entry, target_is_directory=True)
    return data


def _without_mask_path(summary):
    return {k: v for k, v in summary.items() if k != "real_masks"}


def test_descriptions_are_found_in_the_data_folder_then_beside_it(bench, tmp_path):
    assert find_descriptions(bench) == bench / "descriptions" / "descriptions.csv"
    repo = tmp_path / "repo"
    data = _data_folder_without_descriptions(bench, repo)
    (repo / "descriptions").mkdir()
    shutil.copyfile(bench / "descriptions" / "descriptions.csv", repo / "descriptions" / "descriptions.csv")
    assert find_descriptions(data) == repo / "descriptions" / "descriptions.csv"
    (data / "descriptions").mkdir()
    (data / "descriptions" / "descriptions.csv").write_text("scenario,category\n")
    assert find_descriptions(data) == data / "descriptions" / "descriptions.csv"  # the data folder's first
    other = tmp_path / "mine.csv"
    other.write_text("scenario,category\n")
    assert find_descriptions(data, other) == other  # the flag wins over both


def test_score_in_the_repository_layout_and_with_the_descriptions_flag(bench, tmp_path, capsys):
    """The same videos score the same against descriptions found beside the data folder (the benchmark
    repository's layout) and against a --descriptions file anywhere; without one, the error names
    every place looked at."""
    generated = fx.real_take(bench, tmp_path / "gen", 8, "take-2", ids={"0004", "0005", "0006"})
    expected = scoring.score(bench, generated, tmp_path / "out", workers=1)

    repo = tmp_path / "repo"
    data = _data_folder_without_descriptions(bench, repo)
    (repo / "descriptions").mkdir()
    shutil.copyfile(bench / "descriptions" / "descriptions.csv", repo / "descriptions" / "descriptions.csv")
    in_repo = scoring.score(data, generated, tmp_path / "out_repo", workers=1)
    assert _without_mask_path(in_repo) == _without_mask_path(expected)
    assert in_repo["real_masks"] == str(data / "video-masks" / "real" / "8FPS")

    bare = _data_folder_without_descriptions(bench, tmp_path / "bare")
    descriptions = tmp_path / "elsewhere" / "benchmark-descriptions.csv"
    descriptions.parent.mkdir()
    shutil.copyfile(bench / "descriptions" / "descriptions.csv", descriptions)
    argv = ["score", "--data-dir", str(bare), "--generated-dir", str(generated), "--workers", "1"]
    assert (
        command.main([*argv, "--output-dir", str(tmp_path / "o"), "--descriptions", str(descriptions)]) == 0
    )
    capsys.readouterr()
    flagged = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert _without_mask_path(flagged) == _without_mask_path(expected)

    assert command.main([*argv, "--output-dir", str(tmp_path / "o2")]) == 1
    error = capsys.readouterr().err
    assert str(bare / "descriptions" / "descriptions.csv") in error
    assert str(tmp_path / "bare" / "descriptions" / "descriptions.csv") in error
    assert "--descriptions FILE" in error
    missing = tmp_path / "no-such.csv"
    assert command.main([*argv, "--output-dir", str(tmp_path / "o3"), "--descriptions", str(missing)]) == 1
    assert f"--descriptions {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


# ----------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file and the fix, and no output
# ----------------------------------------------------------------------------------------------


def _copy(bench, out, fps=8, ids=("0001",)):
    return fx.real_take(bench, out, fps, "take-2", ids=set(ids))


def _frames(count, size=(64, 48)):
    return [fx.render("ball-drop.mp4", "perspective-left", "take-1", 3 + k / 8, size) for k in range(count)]


def _missing_data(bench, gen):
    return bench.parent / "nowhere", _copy(bench, gen), None, FileNotFoundError, "nowhere does not exist"


def _missing_fps_folder(bench, gen):
    fx.write_video(gen / "0001_x.mp4", _frames(50), 10)
    return bench, gen, None, FileNotFoundError, "10FPS does not exist"


def _non_integer_fps(bench, gen):
    fx.write_video(gen / "0001_x.mp4", _frames(40), 7.5)
    return bench, gen, None, ValueError, "0001_x.mp4 plays at 7.5 fps, not an integer"


def _mixed_fps(bench, gen):
    _copy(bench, gen, 8, ["0001"])
    _copy(bench, gen, 16, ["0002"])
    return bench, gen, None, ValueError, "different fps"


def _fps_flag_mismatch(bench, gen):
    return bench, _copy(bench, gen), 16, ValueError, "--fps 16 was given but the generated videos play at 8"


def _too_short(bench, gen):
    fx.write_video(gen / "0001_x.mp4", _frames(39), 8)
    return bench, gen, None, ValueError, r"0001_x.mp4 has 39 frames \(4.875 s at 8 fps\).*generate 40 frames"


def _duplicate_id(bench, gen):
    _copy(bench, gen)
    fx.write_video(gen / "0001_again.mp4", _frames(40), 8)
    return bench, gen, None, ValueError, "both have ID 0001"


def _unknown_id(bench, gen):
    _copy(bench, gen)
    fx.write_video(gen / "0010_take-2-id.mp4", _frames(40), 8)
    return bench, gen, None, ValueError, r"0010_take-2-id.mp4: unknown test-case ID 0010.*0001–0009"


def _unnamed(bench, gen):
    fx.write_video(gen / "video.mp4", _frames(40), 8)
    return bench, gen, None, ValueError, r"video.mp4: name generated videos `\{ID\}_….mp4`"


def _unreadable(bench, gen):
    gen.mkdir()
    (gen / "0001_broken.mp4").write_bytes(b"not a video" * 100)
    return bench, gen, None, ValueError, "cannot decode the video .*0001_broken.mp4: re-encode it"


def _no_videos(bench, gen):
    gen.mkdir()
    return bench, gen, None, FileNotFoundError, "no .mp4 videos"


def _missing_shipped_mask(bench, gen):
    copy = shutil.copytree(bench, gen.parent / "bench_copy")
    mask = (
        copy / "video-masks" / "real" / "8FPS" / "0010_video-masks_8FPS_perspective-left_take-2_ball-drop.mp4"
    )
    mask.unlink()
    return copy, _copy(bench, gen), None, FileNotFoundError, "real mask .*0010_video-masks_8FPS.* is missing"


@pytest.mark.parametrize(
    "case",
    [
        _missing_data,
        _missing_fps_folder,
        _non_integer_fps,
        _mixed_fps,
        _fps_flag_mismatch,
        _too_short,
        _duplicate_id,
        _unknown_id,
        _unnamed,
        _unreadable,
        _no_videos,
        _missing_shipped_mask,
    ],
)
def test_bad_input_is_a_clear_error(bench, tmp_path, case):
    data_dir, generated, fps, error, message = case(bench, tmp_path / "gen")
    inputs = _snapshot(generated)
    with pytest.raises(error, match=message):
        scoring.score(data_dir, generated, tmp_path / "out", fps=fps, workers=1)
    assert not (tmp_path / "out").exists()  # nothing half-computed is left behind
    assert _snapshot(generated) == inputs
