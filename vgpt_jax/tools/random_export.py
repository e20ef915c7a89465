"""A params-only export of a config with random weights, to time ``vgpt sample`` at full size.

    python -m vgpt_jax.tools.random_export experiments/videogpt_stage4.py OUT [--config.FIELD=VALUE ...]

The export is what ``vgpt export`` writes (Video-GPT and tokenizer parameters and the config), so
``vgpt sample --checkpoint OUT`` runs on it exactly as on a trained model: its wall time, compile
time and peak memory are a trained model's of the same sizes. The Video-GPT weights are
:func:`vgpt_jax.models.video_gpt.random_params`, the tokenizer's its random init
(``config.tokenizer.weights`` is cleared: the export holds them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import inference_mesh
from vgpt_jax.checkpoint.params import save_params
from vgpt_jax.models.clip_tokenizer import ClipTokenizer
from vgpt_jax.models.video_gpt import num_params, random_params
from vgpt_jax.parallel.mesh import sharding_context


def write_random_export(
    config_path: str, output: str | Path, overrides: Sequence[str] = (), seed: int = 0
) -> str:
    """Writes the export of ``config_path`` (with ``overrides``) with random weights; returns its path."""
    config = config_lib.load_experiment(config_path, overrides)
    config = config_lib.with_fields(config, {"tokenizer.weights": ""})
    mesh = inference_mesh(config)
    with sharding_context(mesh, config.mesh.logical_axis_rules):
        params = random_params(config, mesh, seed)
    tokenizer = ClipTokenizer.from_config(config, mesh)
    print(
        f"{num_params(params):,} Video-GPT parameters, {num_params(tokenizer.params):,} tokenizer parameters"
    )
    return save_params(output, {"model": params, "tokenizer": tokenizer.params}, config)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="an experiment file, e.g. experiments/videogpt_1b.py[:ARG]")
    p.add_argument("output", type=Path, help="a new folder for the export")
    p.add_argument("--seed", type=int, default=0)
    a, rest = p.parse_known_args(argv)
    overrides = [arg.removeprefix("--config.") for arg in rest if arg.startswith("--config.")]
    if len(overrides) != len(rest):
        p.error(f"unknown arguments {[arg for arg in rest if not arg.startswith('--config.')]}")
    print(f"wrote {write_random_export(a.config, a.output, overrides, a.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
