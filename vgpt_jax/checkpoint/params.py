"""Params-only checkpoints for inference: a pytree of arrays plus the config that built it.

On disk::

    DIR/params/      an Orbax StandardCheckpointer tree (any nesting, e.g. {"model": ..., "tokenizer": ...})
    DIR/config.json  the ml_collections config as JSON

Written by ``vgpt export`` (Video-GPT + its tokenizer) and by tokenizer training. Restores go
onto the given shardings, or onto the default device when none are given.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vgpt_jax import config as config_lib

PARAMS_DIR = "params"
CONFIG_FILE = "config.json"


def is_params_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a params-only checkpoint."""
    return os.path.isfile(os.path.join(directory, CONFIG_FILE)) and os.path.isdir(
        os.path.join(directory, PARAMS_DIR)
    )


class _UncopiedArray(np.ndarray):
    """A view of a host array whose deep copy is itself.

    Orbax deep-copies the NumPy arrays it saves, all at once, so that an async save sees a
    snapshot (newer versions can be told not to; the GPU image's Orbax cannot): a second copy of
    a whole conversion in host memory. :func:`save_params` blocks until the write is done and
    nothing mutates the arrays meanwhile, so the copy buys nothing.
    """

    def __deepcopy__(self, memo):
        return self


def save_params(directory: str | os.PathLike, params: Any, config: ml_collections.ConfigDict) -> str:
    """Writes ``params`` and ``config`` under ``directory`` (which must not hold a checkpoint yet).

    JAX arrays are written compressed; a tree of NumPy arrays (a conversion's) is written from
    the arrays' own memory, uncompressed and without OCDBT, so host memory stays near the
    parameters' size (Orbax's defaults copy NumPy arrays before writing, compression buffers each
    array in flight, and OCDBT keeps a copy of each array over 2 GiB). Blocks until the arrays
    are on disk. Returns the absolute directory.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(os.path.join(directory, PARAMS_DIR)):
        raise FileExistsError(f"{directory} already holds a params checkpoint: choose a new output folder")
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree.leaves(params)
    # Orbax's default lets 96 GB of arrays be serialised at once, each with its own host buffers:
    # bounding the bytes in flight by the largest array (Orbax needs each to fit) bounds them.
    limit = max(1, math.ceil(max((leaf.nbytes for leaf in leaves), default=0) / 1e9))
    if leaves and all(isinstance(leaf, np.ndarray) for leaf in leaves):
        params = jax.tree.map(lambda leaf: leaf.view(_UncopiedArray), params)
        registry = ocp.type_handlers.create_type_handler_registry(
            (_UncopiedArray, ocp.type_handlers.NumpyHandler())
        )
        # Without OCDBT: its store holds a copy of every array over 2 GiB until the save ends (a
        # 3.76 B model's layer stacks are up to 6 GiB: 2.2x the parameters' size in all).
        handler = ocp.PyTreeCheckpointHandler(
            save_concurrent_gb=limit,
            use_compression=False,
            use_ocdbt=False,
            type_handler_registry=registry,
        )
        args = ocp.args.PyTreeSave(params)
    else:
        handler = ocp.StandardCheckpointHandler(save_concurrent_gb=limit)
        args = ocp.args.StandardSave(params)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(os.path.join(directory, PARAMS_DIR), args=args)
    if jax.process_index() == 0:
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            f.write(config.to_json(indent=2))
    return directory


def load_config(directory: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config saved beside the params, with fields it predates at their defaults."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a params checkpoint (write one with `vgpt export`)"
        )
    with open(path) as f:
        return config_lib.with_defaults(json.load(f))


def _params_path(directory: str | os.PathLike) -> str:
    path = os.path.join(os.path.abspath(os.fspath(directory)), PARAMS_DIR)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a params checkpoint (write one with `vgpt export`)"
        )
    return path


def _saved_arrays(checkpointer: ocp.StandardCheckpointer, path: str) -> dict[str, Any]:
    """The saved tree as ShapeDtypeStructs on the default device."""
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), dict(tree))


def saved_arrays(directory: str | os.PathLike) -> dict[str, Any]:
    """The tree under ``directory`` as ShapeDtypeStructs (shapes and dtypes; nothing is read)."""
    with ocp.StandardCheckpointer() as checkpointer:
        return _saved_arrays(checkpointer, _params_path(directory))


def load_params(directory: str | os.PathLike, abstract: dict[str, Any] | None = None) -> Any:
    """The params under ``directory``.

    ``abstract``: for some top-level entries (e.g. ``{"model": ...}``), ShapeDtypeStructs carrying
    target shardings, so those land on a mesh; every other array lands on the default device.
    """
    path = _params_path(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        target = _saved_arrays(checkpointer, path)
        for name, sub in (abstract or {}).items():
            if name not in target:
                raise ValueError(f"{directory} holds {sorted(target)}, not {name!r}")
            target[name] = sub
        return checkpointer.restore(path, target)
