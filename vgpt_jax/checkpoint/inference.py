"""Loading a model for inference, and ``vgpt export``.

One loader takes either kind of checkpoint a user has:

* a training workdir ``W`` (``W/checkpoints/<step>/``): the latest step's parameters only (the
  optimiser state is never read) and its config; the tokenizer comes from
  ``config.tokenizer.weights``;
* a params-only export (``P/params/``, ``P/config.json``, written by :func:`export`): the
  Video-GPT parameters and the tokenizer's, bundled, so an export is self-contained and
  ``config.tokenizer.weights`` is not read.

Parameters land on the mesh's shardings (the config's mesh by default), never on one device first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import traverse_util
from jax.sharding import Mesh

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.manager import Checkpointer
from vgpt_jax.checkpoint.params import is_params_checkpoint, load_config, load_params, save_params
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.models import clip_tokenizer, video_gpt
from vgpt_jax.models.clip_tokenizer import ClipTokenizer, TokenizerConfig, with_weight_fields
from vgpt_jax.nn.lora import LoRA, is_adapter, merge_adapters
from vgpt_jax.parallel import mesh as mesh_lib

CHECKPOINTS_DIR = "checkpoints"  # a training workdir's Orbax folder


def inference_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """The config's mesh on the devices here; if it does not fit them (a checkpoint trained on
    another machine), every device on the ``fsdp`` axis, which still splits the batch over all."""
    try:
        return mesh_lib.make_mesh(config.mesh)
    except ValueError as error:
        fallback = ml_collections.ConfigDict({ax: 1 for ax in mesh_lib.MESH_AXES} | {"fsdp": -1})
        warnings.warn(f"{error}; sampling on mesh {fallback.to_dict()} instead", stacklevel=2)
        return mesh_lib.make_mesh(fallback)


def _check_tokenizer(config: ml_collections.ConfigDict, source: Path) -> TokenizerConfig:
    """The tokenizer's hyper-parameters; ValueError if they do not fit the model."""
    cfg = TokenizerConfig.from_config(config)
    if cfg.latent_channels != config.model.latent_channels:
        raise ValueError(
            f"the config of {source} has config.tokenizer.latent_channels = {cfg.latent_channels} but "
            f"config.model.latent_channels = {config.model.latent_channels}: they must be equal"
        )
    return cfg


def _workdir_checkpoints(path: Path) -> Checkpointer:
    """The checkpoints of a training workdir; FileNotFoundError if ``path`` holds none (nor an export)."""
    directory = path / CHECKPOINTS_DIR
    # Checked first: the Checkpointer would create a missing folder.
    checkpoints = Checkpointer(directory) if directory.is_dir() else None
    if checkpoints is None or checkpoints.latest_step() is None:
        raise FileNotFoundError(
            f"{path} is neither a training workdir (with {CHECKPOINTS_DIR}/<step>/) nor an export (with "
            "params/ and config.json): pass the --workdir of `vgpt train` or the --output of `vgpt export`"
        )
    return checkpoints


def checkpoint_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config of a training workdir or a params-only export with ``overrides`` applied,
    validated, without reading a weight (a workdir's tokenizer fields are its training config's:
    :func:`load_for_inference` gives the tokenizer weights' own). FileNotFoundError as there."""
    path = Path(path)
    if is_params_checkpoint(path):
        saved = load_config(path)
    else:
        checkpoints = _workdir_checkpoints(path)
        saved = checkpoints.restore_config()
        checkpoints.close()
    return config_lib.validate(config_lib.apply_overrides(saved, overrides))


def load_for_inference(
    path: str | os.PathLike, mesh: Mesh | None = None, overrides: Sequence[str] = ()
) -> tuple[ml_collections.ConfigDict, Any, ClipTokenizer]:
    """(config, Video-GPT params, tokenizer) of a training workdir or a params-only export.

    The config is the checkpoint's own, with ``overrides`` (``FIELD=VALUE``, e.g.
    ``sampling.cfg_scale=1.0``) applied, validated here. ``mesh``: where the parameters go;
    default :func:`inference_mesh` of the checkpoint's config. Raises FileNotFoundError if
    ``path`` is neither kind of checkpoint.
    """
    path = Path(path)
    exported = is_params_checkpoint(path)
    config = checkpoint_config(path, overrides)
    tokenizer_cfg = _check_tokenizer(config, path)
    mesh = inference_mesh(config) if mesh is None else mesh
    model_abstract = video_gpt.abstract_params(config, mesh)
    if exported:
        abstract = {"model": model_abstract, "tokenizer": clip_tokenizer.abstract_params(tokenizer_cfg, mesh)}
        restored = load_params(path, abstract)
        return config, restored["model"], ClipTokenizer(tokenizer_cfg, restored["tokenizer"], mesh)
    checkpoints = _workdir_checkpoints(path)
    params = checkpoints.restore_params(model_abstract)
    checkpoints.close()
    if not config.tokenizer.weights:
        warnings.warn(
            f"the config of {path} sets no config.tokenizer.weights: the tokenizer is randomly "
            "initialised and its pixels are meaningless; set it to the trained tokenizer",
            stacklevel=2,
        )
    tokenizer = tokenizer_from_weights(config, mesh)
    # the weights' own sizes and scaling win over the training config's (and go into an export)
    config = with_weight_fields(config, tokenizer.cfg)
    _check_tokenizer(config, path)
    return config, params, tokenizer


def merge_lora(config: ml_collections.ConfigDict, params: Any) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) with the LoRA adapters folded into their kernels (``W + alpha/r · A B``)
    and ``config.lora`` back at rank 0: the same model, at the base model's cost; as they were
    without adapters."""
    if config.lora.rank == 0:
        return config, params
    scale = LoRA(config.lora.rank, config.lora.alpha, tuple(config.lora.targets)).scale
    # every kept array on its own sharding (replicated outputs would be saved far more slowly)
    shardings = {
        path: x.sharding for path, x in traverse_util.flatten_dict(params).items() if not is_adapter(path)
    }
    merge = jax.jit(lambda p: merge_adapters(p, scale), out_shardings=traverse_util.unflatten_dict(shardings))
    return config_lib.with_fields(config, {"lora.rank": 0, "lora.alpha": 0.0}), merge(params)


def export(checkpoint: str | os.PathLike, output: str | os.PathLike, keep_adapter: bool = False) -> str:
    """Writes the params-only checkpoint of ``checkpoint`` (a workdir or an export) to ``output``.

    It holds ``{"model": params, "tokenizer": tokenizer params}`` and the config; LoRA adapters are
    merged into their kernels (:func:`merge_lora`) unless ``keep_adapter``. Returns ``output`` as
    an absolute path. FileExistsError if ``output`` already holds a checkpoint.
    """
    config, params, tokenizer = load_for_inference(checkpoint)
    if not keep_adapter:
        config, params = merge_lora(config, params)
    return save_params(output, {"model": params, "tokenizer": tokenizer.params}, config)
