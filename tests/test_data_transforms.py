"""The official sampling, rejection, crop_arr and normalisation rules on hand-made cases (spec §2)."""

import numpy as np
import pytest
from PIL import Image

from data_pipelines import transforms


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), (320, 176)),  # 16:9: halve to 960x540, bicubic to 320x180, crop 4 rows
        ((1280, 720), (320, 176)),  # halve to 640x360, bicubic to 320x180
        ((640, 360), (320, 176)),  # no halving (360 < 640)
        ((640, 480), (320, 240)),  # 4:3
        ((1000, 1000), (320, 320)),  # 1:1
        ((1080, 1920), (176, 320)),  # portrait 9:16
        ((7680, 4320), (320, 176)),  # huge: 3840x2160, 1920x1080, 960x540, then 320x180
        ((640, 640), (320, 320)),  # short side exactly 2 x 320: one halving
        ((639, 639), (320, 320)),  # round(639 * 320/639) = 320
        ((320, 180), (320, 176)),  # already small: crop only
        ((8, 4), (32, 16)),  # tiny: short side 4 -> 16 (x4)
        ((100, 10), (160, 16)),  # short side 10 -> 16 (x1.6)
        ((330, 20), (320, 16)),  # 330 -> 320 gives 19.39 -> 19 rows, cropped to 16
        ((50, 50), (48, 48)),
    ],
)
def test_crop_arr_sizes(size, expected):
    assert transforms.crop_arr_size(*size, max_image_size=320) == expected
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    assert transforms.crop_arr(frame, 320).shape == (expected[1], expected[0], 3)


def test_crop_arr_crops_the_centre_without_resampling():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)  # 180 % 16 = 4: 2 rows off each end
    np.testing.assert_array_equal(transforms.crop_arr(frame, 320), frame[2:178])
    frame = rng.integers(0, 256, (41, 100, 3), dtype=np.uint8)  # 41 % 16 = 9: 4 top, 5 bottom; 100 % 16 = 4
    np.testing.assert_array_equal(transforms.crop_arr(frame, 320), frame[4:36, 2:98])


def test_crop_arr_halves_with_a_box_filter():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1280, 1280, 3)).astype(np.int64)  # max 640: one halving, no bicubic step
    # PIL resizes horizontally, then vertically, rounding half up to uint8 after each pass.
    rows = (frame[:, 0::2] + frame[:, 1::2] + 1) // 2
    reference = (rows[0::2] + rows[1::2] + 1) // 2
    np.testing.assert_array_equal(transforms.crop_arr(frame.astype(np.uint8), 640), reference)


def test_crop_arr_rescales_the_long_side_with_bicubic():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (360, 640, 3)).astype(np.uint8)
    reference = np.asarray(Image.fromarray(frame).resize((320, 180), Image.Resampling.BICUBIC))[2:178]
    np.testing.assert_array_equal(transforms.crop_arr(frame, 320), reference)


def test_fixed_interval_start_frame_range():
    # T = 61, N = 16, interval 4: (N-1)*4 + 1 = 61 frames exactly, so the only start is 0.
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(transforms.frame_indices(rng, 61, 16, 4), np.arange(0, 61, 4))
    assert transforms.frame_indices(rng, 60, 16, 4) is None
    # T = 100: start ~ U{0 .. 100 - 60 - 1 = 39}; every start occurs and none beyond.
    starts = {int(transforms.frame_indices(rng, 100, 16, 4)[0]) for _ in range(3000)}
    assert starts == set(range(40))


@pytest.mark.parametrize(("n", "interval", "minimum"), [(16, 4, 61), (48, 4, 189), (80, 4, 317), (8, 1, 8)])
def test_min_source_frames(n, interval, minimum):
    assert transforms.min_source_frames(n, interval) == minimum


def test_flexible_interval_bounds_and_rejection():
    rng = np.random.default_rng(0)
    # floor((T - 1) / (N - 1)) with N = 16
    assert transforms.flexible_interval_bound(61, 16, 4, 12) == 4  # 60 / 15 = 4
    assert transforms.flexible_interval_bound(60, 16, 4, 12) == 0  # 59 / 15 = 3.93 -> 3 < 4: rejected
    assert transforms.flexible_interval_bound(106, 16, 4, 12) == 7  # 105 / 15 = 7
    assert transforms.flexible_interval_bound(1000, 16, 4, 12) == 12  # 66, capped at 12
    assert transforms.flexible_interval_bound(189, 48, 4, 12) == 4  # 188 / 47 = 4
    assert transforms.flexible_interval_bound(188, 48, 4, 12) == 0  # 187 / 47 = 3.98
    assert transforms.frame_indices(rng, 60, 16, 4, flexible=True) is None
    intervals, lasts = set(), set()
    for _ in range(2000):
        idx = transforms.frame_indices(rng, 106, 16, 4, flexible=True)
        step = np.diff(idx)
        assert np.all(step == step[0])
        intervals.add(int(step[0]))
        lasts.add(int(idx[-1]))
    assert intervals == {4, 5, 6, 7}  # U{4 .. 7}
    assert max(lasts) <= 105 and 105 in lasts  # interval 7 reaches the last frame exactly


def test_size_rejection_rules():
    assert transforms.size_rejection(1920, 1080) == ""
    assert "side 127" in transforms.size_rejection(500, 127)
    assert transforms.size_rejection(512, 128) == ""  # aspect exactly 4 is allowed
    assert "aspect" in transforms.size_rejection(513, 128)
    assert "aspect" in transforms.size_rejection(200, 1000)


def test_to_unit_range():
    x = np.array([0, 1, 127, 128, 255], np.uint8)
    expected = (x / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(transforms.uint8_to_signed(x), expected, atol=1e-6)
    assert transforms.uint8_to_signed(x).dtype == np.float32


def test_fit_to_bucket():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (2, 176, 320, 3), dtype=np.uint8)
    assert transforms.fit_to_bucket(clip, 176, 320) is clip  # the bucket size passes unchanged
    clip43 = rng.integers(
        0, 256, (2, 240, 320, 3), dtype=np.uint8
    )  # 4:3 into 16:9: crop 32 rows off each end
    np.testing.assert_array_equal(transforms.fit_to_bucket(clip43, 176, 320), clip43[:, 32:208])
    portrait = rng.integers(
        0, 256, (2, 320, 176, 3), dtype=np.uint8
    )  # scaled x 320/176 to cover, then cropped
    assert transforms.fit_to_bucket(portrait, 176, 320).shape == (2, 176, 320, 3)
