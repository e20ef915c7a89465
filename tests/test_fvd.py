"""FVD: TF-1 resizing, the Fréchet distance, clip selection, batching, and real camera footage."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import video_metrics_reference as ref
from real_footage import camera_clips

from vgpt_jax.evaluation import fvd

# --- resizing -------------------------------------------------------------------------------------


def test_tf1_resize_hand_computed_cases():
    row = lambda values, size: np.asarray(
        fvd.tf1_resize_bilinear(jnp.asarray(values, jnp.float32)[None, :, None], 1, size)
    ).reshape(-1)
    # 4 -> 2: source pixels 0 and 2, no averaging of neighbours
    np.testing.assert_allclose(row([0, 10, 20, 30], 2), [0, 20])
    # 2 -> 4: sources 0, 0.5, 1, 1.5 (clamped to the last pixel)
    np.testing.assert_allclose(row([0, 10], 4), [0, 5, 10, 10])
    # 3 -> 2: sources 0 and 1.5
    np.testing.assert_allclose(row([0, 10, 40], 2), [0, 25])


@pytest.mark.parametrize("shape", [(37, 53), (300, 250), (272, 640)])
def test_tf1_resize_matches_its_definition_on_non_integer_ratios(shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = np.asarray(jax.jit(fvd.tf1_resize_bilinear, static_argnums=(1, 2))(image, 224, 224))
    want = ref.tf1_resize_bilinear(image, 224, 224)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_jax_image_resize_is_not_tf1_bilinear():
    """4 -> 2 pixels. TF-1 samples source pixels 0 and 2: (0, 20). jax.image.resize samples at
    half-pixel centres 0.5 and 2.5: (5, 25) without antialiasing; by default it also widens the
    triangle filter 2x when downsampling (weights 3/4, 3/4, 1/4 on pixels 0, 1, 2 for the first
    output, renormalised at the border): (50/7, 160/7)."""
    values = jnp.asarray([0, 10, 20, 30], jnp.float32)
    np.testing.assert_allclose(jax.image.resize(values, (2,), "bilinear", antialias=False), [5, 25])
    np.testing.assert_allclose(jax.image.resize(values, (2,), "bilinear"), [50 / 7, 160 / 7], rtol=1e-6)
    np.testing.assert_allclose(fvd.tf1_resize_matrix(4, 2) @ np.asarray(values), [0, 20])


def test_i3d_input_squash_and_center_crop():
    clip = np.random.default_rng(1).integers(0, 256, (1, 2, 112, 200, 3), dtype=np.uint8)
    squashed = np.asarray(fvd.i3d_input(clip, "squash"))
    want = 2 * ref.tf1_resize_bilinear(clip[0, 1], 224, 224) / 255 - 1
    np.testing.assert_allclose(squashed[0, 1], want, atol=2e-5)
    # short side 112 -> 224 (x2), long side 200 -> 400, then the central 224 columns
    cropped = np.asarray(fvd.i3d_input(clip, "center-crop"))
    want = 2 * ref.tf1_resize_bilinear(clip[0, 1], 224, 400)[:, 88:312] / 255 - 1
    np.testing.assert_allclose(cropped[0, 1], want, atol=2e-5)
    extremes = np.asarray(fvd.i3d_input(np.full((1, 1, 10, 10, 3), 255, np.uint8), "squash"))
    np.testing.assert_allclose(extremes, 1.0, atol=1e-6)


# --- the distance ---------------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=7), rng.normal(size=7)
    s1, s2 = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    want = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fvd.frechet_distance(
        fvd.covariance_statistics(m1, np.diag(s1)), fvd.covariance_statistics(m2, np.diag(s2))
    )
    assert got == pytest.approx(want, rel=1e-12)


def _scipy_frechet(x, y):
    """The textbook computation: np.cov (ddof=1) and the real part of scipy's sqrtm, float64."""
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = x.mean(0) - y.mean(0)
    return diff @ diff + np.trace(c1) + np.trace(c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(8, 8))
    x = rng.normal(size=(60, 8)) @ mix
    y = rng.normal(size=(45, 8)) @ mix * 1.3 + 0.4
    assert fvd.fvd_from_features(x, y) == pytest.approx(_scipy_frechet(x, y), rel=1e-9)
    covariances = (
        fvd.covariance_statistics(x.mean(0), np.cov(x, rowvar=False)),
        fvd.covariance_statistics(y.mean(0), np.cov(y, rowvar=False)),
    )
    assert fvd.frechet_distance(*covariances) == pytest.approx(_scipy_frechet(x, y), rel=1e-9)


def test_feature_statistics_covariance_is_ddof_1():
    x = np.random.default_rng(4).normal(size=(5, 9))  # fewer videos than dimensions
    stats = fvd.feature_statistics(x)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False, ddof=1), atol=1e-12)
    np.testing.assert_allclose(stats.mean, x.mean(0))
    assert stats.count == 5


def test_fvd_of_a_set_against_itself_is_zero_with_singular_covariances():
    # logit-sized 400-d features of 6 videos: the covariance has rank 5, the regime of small sets,
    # where the square root of the near-zero eigenvalues (scipy's sqrtm, TF-GAN's eigh form) gives
    # about -1e-3 on real I3D features
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 400)) * rng.uniform(0.1, 8, 400) + rng.normal(size=400) * 5
    assert abs(fvd.fvd_from_features(x, x)) < 1e-6
    assert abs(fvd.fvd_from_features(x, x[::-1])) < 1e-6


def test_fvd_needs_two_videos_a_side():
    with pytest.raises(ValueError, match="at least 2 videos"):
        fvd.fvd_from_features(np.zeros((1, 400)), np.zeros((3, 400)))


def test_size_warnings_below_401_videos():
    assert fvd.size_warnings(401, 5000) == []
    (warning,) = fvd.size_warnings(400, 2048)
    assert "400 real videos" in warning and "singular" in warning


def test_subsets_and_class_balance():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(12, 3))
    # a draw of every video is a permutation of the set: FVD 0 on each repeat
    scores = fvd.subset_fvds(real, real.copy(), size=12, repeats=3, seed=1)
    np.testing.assert_allclose(scores, 0, atol=1e-9)
    # class-balanced: class "b" holds the only far-away videos, so every balanced draw of 4 (2 a
    # class) from both sides has the same statistics regardless of the seed
    classes = ["a"] * 6 + ["b"] * 6
    real[6:] += 100
    balanced = fvd.subset_fvds(
        real, real, size=4, repeats=4, seed=2, real_classes=classes, generated_classes=classes
    )
    unbalanced = fvd.subset_fvds(real, real, size=4, repeats=20, seed=2)
    assert max(balanced) < 1e3 < max(unbalanced)
    with pytest.raises(ValueError, match="does not split evenly over 2 classes"):
        fvd.subset_fvds(real, real, size=5, repeats=1, real_classes=classes, generated_classes=classes)
    with pytest.raises(ValueError, match="more than the 12 videos"):
        fvd.subset_fvds(real, real, size=13, repeats=1)


def test_statistics_file_round_trip_and_protocol_check(tmp_path):
    stats = fvd.feature_statistics(np.random.default_rng(7).normal(size=(4, 6)))
    path = tmp_path / "real_stats.npz"
    fvd.save_statistics(path, stats, fvd.Protocol())
    loaded = fvd.load_statistics(path, fvd.Protocol())
    np.testing.assert_array_equal(loaded.factor, stats.factor)
    assert loaded.count == 4
    with pytest.raises(ValueError, match="frames, resize differ"):
        fvd.load_statistics(path, fvd.Protocol(frames=10, resize="center-crop"))


# --- clips and batching ---------------------------------------------------------------------------


def test_protocol_and_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 9 frames"):
        fvd.Protocol(frames=8)
    with pytest.raises(ValueError, match="squash, center-crop"):
        fvd.Protocol(resize="crop")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        fvd.list_videos(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="holds no videos"):
        fvd.list_videos(tmp_path)


def test_unfinished_videos_are_not_listed(tmp_path):
    """An interrupted write leaves its video in a .partial folder: not a member of the set."""
    for name in ("b/2.mp4", "a/1.mp4", "a/.partial/3.mp4", ".partial/4.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in fvd.list_videos(tmp_path)] == ["a/1.mp4", "b/2.mp4"]


def _mean_pixel(variables, clips, resize):
    """A stand-in for the network: each clip's mean pixel value, (B, 3)."""
    return clips.mean(axis=(1, 2, 3)).astype(float)


def test_batches_keep_order_across_sizes_and_short_batches(monkeypatch):
    """14 clips, 8 devices, 2 a device: a full batch of 16 is never reached; the frame size changes
    after 11 clips, so the batches are 11 (padded to 16) and 3 (one device each)."""
    monkeypatch.setattr(
        fvd, "_logits", lambda variables, clips, resize: clips.mean(axis=(1, 2, 3)).astype(float)
    )
    features = fvd.I3DFeatures(variables={}, per_device_batch=2)
    assert len(features.devices) == 8
    clips = [np.full((9, 4, 4, 3), i, np.uint8) for i in range(11)]
    clips += [np.full((9, 6, 4, 3), 20 + i, np.uint8) for i in range(3)]
    got = features(iter(clips))
    np.testing.assert_array_equal(got[:, 0], [*range(11), 20, 21, 22])


# --- real footage ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_fvd_on_camera_footage_ranks_distortions():
    """Two camera clips (640x272 and 176x144: two frame sizes in one run) against distorted copies.

    Slight noise (sigma 3 grey levels) barely moves the I3D features; a blur (sigma 3 px) or
    shuffling the frames in time moves them far.
    """
    real = camera_clips(frames=10)
    rng = np.random.default_rng(0)
    noised = [np.clip(v + rng.normal(0, 3, v.shape), 0, 255).astype(np.uint8) for v in real]
    blurred = [np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in v]) for v in real]
    shuffled = [v[rng.permutation(len(v))] for v in real]
    features = fvd.I3DFeatures()
    real_features = features(real)
    score = {
        name: fvd.fvd_from_features(real_features, features(videos))
        for name, videos in (("noised", noised), ("blurred", blurred), ("shuffled", shuffled))
    }
    assert score["blurred"] > 10 * score["noised"]
    assert score["shuffled"] > 10 * score["noised"]


def test_features_per_second_runs_on_a_stub_network(monkeypatch):
    monkeypatch.setattr(fvd, "_logits", _mean_pixel)
    rate = fvd.features_per_second(fvd.I3DFeatures(variables={}), num_clips=3, frames=9, height=8, width=8)
    assert rate > 0


def test_fvd_of_directories_reads_sorted_videos(monkeypatch, tmp_path):
    """Two folders holding the same videos under other names score 0; a brighter copy does not."""
    from data_pipelines import video_io

    monkeypatch.setattr(fvd, "_logits", _mean_pixel)
    features = fvd.I3DFeatures(variables={})
    for folder, names, offset in (("real", "ab", 0), ("same", "yx", 0), ("bright", "cd", 60)):
        (tmp_path / folder).mkdir()
        for name, level in zip(names, (40, 120), strict=True):
            frames = np.full((12, 16, 16, 3), level + offset, np.uint8)
            frames[:, :8] += np.arange(12, dtype=np.uint8)[:, None, None, None] * 3  # moving content
            video_io.write_video(str(tmp_path / folder / f"{name}.mp4"), frames, fps=10)
    same = fvd.fvd_of_directories(tmp_path / "real", tmp_path / "same", fvd.Protocol(frames=9), features)
    assert same["num_real"] == same["num_generated"] == 2 and same["fvd"] == pytest.approx(0, abs=1e-6)
    bright = fvd.fvd_of_directories(tmp_path / "real", tmp_path / "bright", fvd.Protocol(frames=9), features)
    assert bright["fvd"] > 100 and bright["warnings"]
