"""The ``vgpt`` command: ``vgpt <command> --config experiments/X.py [--config.a.b=v ...]``.

Commands:
  info         print one JSON object describing a config: exact parameter count, sizes, mesh, backend.
  train        ``vgpt train --config experiments/X.py --workdir W [--config.a.b=v ...] [--distributed]``:
               train (or resume) in W; every host of a multi-host job runs the same command.
  physics-iq   Physics-IQ evaluation (``vgpt physics-iq --help``); takes its own flags, not a config.
  export       ``vgpt export --checkpoint W --output P``: a params-only checkpoint (model + tokenizer).
  sample       ``vgpt sample --checkpoint C --video IN.mp4 --cond-frames K --num-frames M --output OUT.mp4``:
               video prediction from a file.
  convert      ``vgpt convert --official DIR --output CKPT`` (released weights -> params checkpoint) or
               ``vgpt convert --to-official CKPT --output DIR``.
  demo         ``vgpt demo --config experiments/demo.py --workdir W``: synthetic physics world ->
               tokenizer -> Video-GPT -> Physics-IQ of the model and a copy-last-frame baseline.
``export``, ``sample`` and ``convert`` take their own flags (``vgpt sample --help``); C is a training
workdir or an export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

COMMANDS = ("info", "train", "physics-iq", "export", "sample", "convert", "demo")

_CONFIG = config_flags.DEFINE_config_file("config", None, "An experiments/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "train/demo: where checkpoints, logs, samples and reports go")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "train: join the multi-host job JAX's cluster detection finds (SLURM, TPU pods, ...)",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "train: host:port of process 0 (else JAX_COORDINATOR_ADDRESS)"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "train: processes (else JAX_NUM_PROCESSES)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "train: this process's id (else JAX_PROCESS_ID)")


def info(config) -> dict:
    """Facts about a config, computed without allocating parameters."""
    import jax

    from vgpt_jax import config as config_lib
    from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, example_inputs, num_params
    from vgpt_jax.nn.attention import resolve_backend
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
        "attention_backend": resolve_backend(config.model.attention.backend),
        "remat_policy": config.model.remat_policy,
        "dtype": config.model.dtype,
    }


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vgpt export",
        description="Writes a params-only checkpoint (Video-GPT and tokenizer parameters + config.json) "
        "that `vgpt sample` and `vgpt physics-iq generate` accept.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir (or an export)")
    parser.add_argument("--output", required=True, type=Path, help="a new folder for the export")
    return parser


def _sample_parser() -> argparse.ArgumentParser:
    from vgpt_jax.sample.options import add_sampling_arguments, positive_int

    parser = argparse.ArgumentParser(
        prog="vgpt sample",
        description="Video prediction: the model continues the first --cond-frames frames of --video by "
        "--num-frames frames, written to --output at the input's size.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir or an export")
    parser.add_argument("--video", required=True, type=Path, help="the input video")
    parser.add_argument("--cond-frames", required=True, type=positive_int, help="conditioning frames K")
    parser.add_argument("--num-frames", required=True, type=positive_int, help="frames to predict M")
    parser.add_argument("--output", required=True, type=Path, help="the output .mp4")
    parser.add_argument(
        "--stride",
        type=positive_int,
        default=1,
        help="take every S-th input frame (the release reads every 4th)",
    )
    parser.add_argument("--fps", type=positive_int, help="output fps (default: the input's fps / stride)")
    parser.add_argument(
        "--with-context", action="store_true", help="write the K conditioning frames before the prediction"
    )
    add_sampling_arguments(parser)
    return parser


def _own_flags_main(command: str, argv: list[str]) -> int:
    """`vgpt export|sample …`; returns the exit status. Bad input is one line naming the file and the fix."""
    args = (_export_parser() if command == "export" else _sample_parser()).parse_args(argv)
    try:
        if command == "export":
            from vgpt_jax.checkpoint.inference import export

            print(f"exported {args.checkpoint} to {export(args.checkpoint, args.output)}")
            return 0
        from vgpt_jax.sample.options import sampling_overrides
        from vgpt_jax.sample.predict import predict_file

        frames = predict_file(
            args.checkpoint,
            args.video,
            args.output,
            args.cond_frames,
            args.num_frames,
            stride=args.stride,
            fps=args.fps,
            with_context=args.with_context,
            **sampling_overrides(args),
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"vgpt {command}: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {frames} frames to {args.output}")
    return 0


def _main(argv, command: str) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config experiments/tiny_cpu.py")
    if command == "info":
        print(json.dumps(info(config)))
    elif command == "train":
        if not _WORKDIR.value:
            raise app.UsageError("--workdir is required, e.g. --workdir /runs/my_run")
        from vgpt_jax.parallel import distributed

        distributed.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value
        )
        from vgpt_jax.train import launch

        launch.run(config, _WORKDIR.value)
    elif command == "demo":
        if not _WORKDIR.value:
            raise app.UsageError("--workdir is required, e.g. --workdir workdir/demo")
        from vgpt_jax import demo

        demo.run(config, _WORKDIR.value)


def run() -> None:
    """Console entry point."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(
            "usage: vgpt info --config experiments/X.py [--config.field=value ...]\n"
            "       vgpt train --config experiments/X.py --workdir W [--config.field=value ...]\n"
            "       vgpt physics-iq {score|generate|run} ...   (vgpt physics-iq --help)\n"
            "       vgpt export --checkpoint W --output P\n"
            "       vgpt sample --checkpoint C --video IN.mp4 --cond-frames K --num-frames M "
            "--output OUT.mp4 [...]   (vgpt sample --help)\n"
            "       vgpt convert {--official DIR|--to-official CKPT} --output PATH   (vgpt convert --help)\n"
            "       vgpt demo --config experiments/demo.py --workdir W",
            file=sys.stderr,
        )
        sys.exit(2)
    command = sys.argv[1]
    if command == "physics-iq":
        from vgpt_jax.evaluation.physics_iq import command as physics_iq

        sys.exit(physics_iq.main(sys.argv[2:]))
    if command == "convert":
        from vgpt_jax.convert import official

        sys.exit(official.main(sys.argv[2:]))
    if command in ("export", "sample"):
        sys.exit(_own_flags_main(command, sys.argv[2:]))
    app.run(lambda argv: _main(argv, command), argv=[f"vgpt {command}", *sys.argv[2:]])


if __name__ == "__main__":
    run()
