"""``vgpt info``: one JSON object describing a config (parameter counts, sizes, mesh, backend)."""

from __future__ import annotations

import argparse
import json

import ml_collections

HELP = "print a config's exact parameter counts (total, trained), sequence sizes, mesh and backend (JSON)"
CONFIG = "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # the config is the only input


def info(config: ml_collections.ConfigDict) -> dict:
    """Facts about a validated config, computed without allocating parameters."""
    import jax

    from vgpt_jax import config as config_lib
    from vgpt_jax.models.video_gpt import abstract_params, num_params
    from vgpt_jax.nn.attention import resolve_backend
    from vgpt_jax.parallel.mesh import MESH_AXES, mesh_shape
    from vgpt_jax.train.trainable import Trainable

    sizes = config_lib.sizes(config)
    params = abstract_params(config)
    return {
        "num_params": num_params(params),
        # with config.lora.rank > 0 only the adapters are trained (and have optimiser state)
        "trainable_params": num_params(Trainable.from_config(config).split(params)[0]),
        "tokens_per_frame": sizes.tokens_per_frame,
        "block_len": sizes.block_len,
        "num_frames": sizes.num_frames,
        "max_seq_len": sizes.seq_len,
        "official_max_seq_len": sizes.official_max_seq_len,
        "mesh": dict(zip(MESH_AXES, mesh_shape(config.mesh, jax.device_count()), strict=True)),
        "num_devices": jax.device_count(),
        "attention_backend": resolve_backend(config.model.attention.backend),
        "remat_policy": config.model.remat_policy,
        "dtype": config.model.dtype,
    }


def main(args: argparse.Namespace) -> int:
    print(json.dumps(info(args.config)))
    return 0
