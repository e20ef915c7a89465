"""The clip tokenizer's weights on disk: params checkpoints, diffusers folders, and the choice
between them that ``config.tokenizer.weights`` makes.

A params checkpoint (``DIR/params/`` + ``DIR/config.json``, see :mod:`vgpt_jax.checkpoint.params`)
is what tokenizer training writes; a diffusers ``AutoencoderKL`` folder (``config.json`` +
safetensors, e.g. the SDXL VAE) is imported through :mod:`vgpt_jax.convert.vae`, without torch.
"""

from __future__ import annotations

import os

import ml_collections
from jax.sharding import Mesh

from vgpt_jax.checkpoint import params as params_ckpt
from vgpt_jax.convert import vae
from vgpt_jax.models.clip_tokenizer import ClipTokenizer, TokenizerConfig, abstract_params, single_device_mesh


def save_tokenizer(
    tokenizer: ClipTokenizer, directory: str | os.PathLike, config: ml_collections.ConfigDict
) -> str:
    """Writes the parameters and ``config`` (whose tokenizer section built them): a params checkpoint."""
    return params_ckpt.save_params(directory, tokenizer.params, config)


def load_tokenizer(directory: str | os.PathLike, mesh: Mesh | None = None) -> ClipTokenizer:
    """A tokenizer written by :func:`save_tokenizer`; its sizes come from the config saved beside it."""
    cfg = TokenizerConfig.from_config(params_ckpt.load_config(directory))
    mesh = single_device_mesh() if mesh is None else mesh
    return ClipTokenizer(cfg, params_ckpt.load_params(directory, abstract_params(cfg, mesh)), mesh)


def tokenizer_from_diffusers(
    folder: str | os.PathLike, mesh: Mesh | None = None, chunk_frames: int = 8
) -> ClipTokenizer:
    """Imports a diffusers ``AutoencoderKL`` folder (config.json + safetensors); needs no torch."""
    cfg, params = vae.import_vae(folder, chunk_frames=chunk_frames)
    return ClipTokenizer(cfg, params, mesh)


def tokenizer_from_weights(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> ClipTokenizer:
    """The tokenizer ``config.tokenizer.weights`` names.

    '' -> random init (``ClipTokenizer.from_config``); a params checkpoint -> :func:`load_tokenizer`;
    a diffusers folder -> :func:`tokenizer_from_diffusers` (with ``config.tokenizer.chunk_frames``).
    """
    weights = config.tokenizer.weights
    if not weights:
        return ClipTokenizer.from_config(config, mesh)
    if params_ckpt.is_params_checkpoint(weights):
        return load_tokenizer(weights, mesh)
    if os.path.isfile(os.path.join(weights, vae.CONFIG_FILE)) and os.path.isfile(
        os.path.join(weights, vae.WEIGHTS_FILE)
    ):
        return tokenizer_from_diffusers(weights, mesh, chunk_frames=config.tokenizer.chunk_frames)
    found = sorted(os.listdir(weights))[:8] if os.path.isdir(weights) else "nothing (no such folder)"
    raise ValueError(
        f"config.tokenizer.weights = {weights!r} is neither a tokenizer params checkpoint "
        f"({params_ckpt.CONFIG_FILE} + {params_ckpt.PARAMS_DIR}/, written by vgpt_jax.train.tokenizer) "
        f"nor a diffusers AutoencoderKL folder ({vae.CONFIG_FILE} + {vae.WEIGHTS_FILE}); found {found}. "
        "Use '' for a randomly initialised tokenizer"
    )
