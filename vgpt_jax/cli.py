"""The ``vgpt`` command: ``vgpt <command> --config experiments/X.py [--config.a.b=v ...]``.

Commands:
  info         print one JSON object describing a config: exact parameter count, sizes, mesh, backend.
  physics-iq   Physics-IQ evaluation (``vgpt physics-iq --help``); takes its own flags, not a config.
"""

from __future__ import annotations

import json
import sys

from absl import app
from ml_collections import config_flags

COMMANDS = ("info", "physics-iq")

_CONFIG = config_flags.DEFINE_config_file("config", None, "An experiments/*.py file.", lock_config=True)


def info(config) -> dict:
    """Facts about a config, computed without allocating parameters."""
    import jax

    from vgpt_jax import config as config_lib
    from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, example_inputs, num_params
    from vgpt_jax.parallel.mesh import MESH_AXES, mesh_shape

    config_lib.validate(config)
    sizes = config_lib.sizes(config)
    model = VideoGPT(ModelConfig.from_config(config))
    # Two frames suffice: no parameter depends on the sequence length.
    params = jax.eval_shape(
        lambda key: model.init(key, *example_inputs(config, num_frames=2))["params"], jax.random.key(0)
    )
    return {
        "num_params": num_params(params),
        "tokens_per_frame": sizes.tokens_per_frame,
        "block_len": sizes.block_len,
        "num_frames": sizes.num_frames,
        "max_seq_len": sizes.seq_len,
        "official_max_seq_len": sizes.official_max_seq_len,
        "mesh": dict(zip(MESH_AXES, mesh_shape(config.mesh, jax.device_count()), strict=True)),
        "num_devices": jax.device_count(),
        "attention_backend": config.model.attention.backend,
        "remat_policy": config.model.remat_policy,
        "dtype": config.model.dtype,
    }


def _main(argv, command: str) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config experiments/tiny_cpu.py")
    if command == "info":
        print(json.dumps(info(config)))


def run() -> None:
    """Console entry point."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(
            f"usage: vgpt {{{'|'.join(COMMANDS)}}} --config experiments/X.py [--config.field=value ...]",
            file=sys.stderr,
        )
        sys.exit(2)
    command = sys.argv[1]
    if command == "physics-iq":
        from vgpt_jax.evaluation import physics_iq

        sys.exit(physics_iq.main(sys.argv[2:]))
    app.run(lambda argv: _main(argv, command), argv=[f"vgpt {command}", *sys.argv[2:]])


if __name__ == "__main__":
    run()
