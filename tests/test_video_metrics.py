"""Per-frame PSNR and SSIM against float64 NumPy implementations of their definitions."""

import math

import cv2
import numpy as np
import pytest
import video_metrics_reference as ref
from real_footage import camera_clips

from vgpt_jax.evaluation import video_metrics


@pytest.fixture(scope="module")
def camera_frames():
    """3 frames of camera footage, cropped to 40x48 (small enough for the NumPy SSIM loop)."""
    return camera_clips(frames=3)[1][:, 50:90, 60:108]


def test_psnr_and_ssim_match_numpy_on_camera_footage(camera_frames):
    rng = np.random.default_rng(0)
    noised = np.clip(camera_frames + rng.normal(0, 8, camera_frames.shape), 0, 255).astype(np.uint8)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in camera_frames])
    for predicted in (noised, blurred):
        got = video_metrics.frame_metrics(predicted[None], camera_frames[None])
        assert got["psnr"].shape == got["ssim"].shape == (1, 3)
        for t in range(3):
            assert got["psnr"][0, t] == pytest.approx(ref.psnr(predicted[t], camera_frames[t]), abs=1e-4)
            assert got["ssim"][0, t] == pytest.approx(ref.ssim(predicted[t], camera_frames[t]), abs=1e-5)


def test_identical_frames_score_infinite_psnr_and_ssim_one(camera_frames):
    got = video_metrics.frame_metrics(camera_frames, camera_frames)
    assert np.all(np.isinf(got["psnr"])) and got["psnr"].shape == (3,)
    np.testing.assert_allclose(got["ssim"], 1.0, atol=1e-6)


def test_psnr_of_a_constant_error_is_hand_computed():
    target = np.full((2, 16, 16, 3), 100, np.uint8)
    # every pixel off by 51 = 0.2 of the range: MSE 0.04, PSNR = 10 log10(25)
    got = video_metrics.frame_metrics(target + 51, target)["psnr"]
    np.testing.assert_allclose(got, 10 * math.log10(25), rtol=1e-6)


def test_shape_and_size_errors():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="one shape"):
        video_metrics.frame_metrics(a, a[:1])
    with pytest.raises(ValueError, match="at least 11x11"):
        video_metrics.frame_metrics(a[:, :8], a[:, :8])
