"""A tiny training workdir for the inference tests: tiny_cpu with a tiny tokenizer, random weights.

Weights are drawn on the host with NumPy: a compiled random init of the two models costs far more
time on a CPU than the tests themselves, and any weights do for loading and shape checks.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np
from conftest import load_experiment

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import export
from vgpt_jax.checkpoint.manager import Checkpointer
from vgpt_jax.checkpoint.tokenizer import save_tokenizer
from vgpt_jax.models import clip_tokenizer
from vgpt_jax.models.clip_tokenizer import ClipTokenizer, TokenizerConfig
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.step import Trainer, TrainState

STEP = 7
TOKENIZER_SCALING = 0.5  # the tokenizer's own, not the training config's default


def tiny_config():
    """tiny_cpu (64x64-pixel frames: 8x8 latents) with the tiny tokenizer (tokenizer_tiny.py)."""
    config = load_experiment("tokenizer_tiny")
    config.tokenizer.weights = ""
    return config


def _random_like(abstract, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype), abstract)


def make_workdir(workdir: Path, overrides: tuple[str, ...] = ()):
    """Writes a trained tokenizer's checkpoint (W/tokenizer) and W/checkpoints/STEP as training does,
    for tiny_config() with ``overrides`` (``FIELD=VALUE``).

    Returns (config, the Video-GPT params written, as NumPy).
    """
    config = config_lib.apply_overrides(tiny_config(), overrides)
    mesh = make_mesh(config.mesh)
    cfg = TokenizerConfig.from_config(config)
    tokenizer_params = _random_like(clip_tokenizer.abstract_params(cfg), seed=1, scale=0.1)
    # trained with a fitted scaling that the training config does not know; on one device: Orbax
    # saves arrays replicated over many devices far more slowly
    tokenizer_config = ml_collections.ConfigDict(config.to_dict())
    tokenizer_config.tokenizer.scaling_factor = TOKENIZER_SCALING
    fitted = dataclasses.replace(cfg, scaling_factor=TOKENIZER_SCALING)
    save_tokenizer(ClipTokenizer(fitted, tokenizer_params), workdir / "tokenizer", tokenizer_config)
    config.tokenizer.weights = str(workdir / "tokenizer")

    trainer = Trainer(config, mesh)
    params = _random_like(trainer.abstract_state.params, seed=2, scale=0.1)
    opt_state = trainer.optimizer.init(trainer.trainable.split(params)[0])
    state = TrainState(step=np.int32(STEP), params=params, opt_state=opt_state)
    checkpoints = Checkpointer(workdir / "checkpoints", async_save=False)
    checkpoints.save(STEP, jax.device_put(state, trainer.state_shardings), config)
    checkpoints.wait()
    checkpoints.close()
    return config, flat(params)


@functools.cache
def shared_checkpoints() -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(workdir, its export, the Video-GPT params written), made once per test process for every
    test file (exporting costs many small compiles on 8 fake devices)."""
    root = Path(tempfile.mkdtemp(prefix="vgpt_inference_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _, saved = make_workdir(root / "workdir")
    return root / "workdir", Path(export(root / "workdir", root / "export")), saved


def flat(tree) -> dict[str, np.ndarray]:
    """Every leaf of a pytree as a NumPy array, keyed by its path."""
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def moving_square(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a white square moving right one pixel a frame on a grey background."""
    frames = np.full((num_frames, height, width, 3), 96, np.uint8)
    for t in range(num_frames):
        frames[t, height // 3 : height // 3 + 8, 2 + t : 10 + t] = 255
    return frames
