"""Compiled memory of every program `vgpt sample` runs, from abstract inputs: nothing is run.

For a config at a frame size, with K conditioning frames and M predicted ones, the programs of
:meth:`vgpt_jax.sample.predict.Predictor.predict` in their order: the tokenizer's encode of the
conditioning frames, then per round of :meth:`Sampler.rollout` (one program per distinct shape)
the sampler's clip (prefill and the whole denoising loop), the decode of the clip and its
re-encoding. Each is lowered and compiled on this machine's default device with
ShapeDtypeStructs for the parameters and inputs, and XLA's ``memory_analysis`` is printed in GiB:
arguments, outputs, temporaries, aliased (donated) bytes, and their peak sum
(argument + output + temp − alias). On a GPU that sum is what must fit beside nothing else; on a
CPU the numbers differ in detail (bf16 matmuls upcast, no fused attention kernels).

    PYTHONPATH=$PWD python -m vgpt_jax.tools.sample_memory experiments/videogpt_stage4.py \\
        --frame-size 176x320 --cond-frames 56 --num-frames 24

``--config.FIELD=VALUE`` overrides any field (``--config.sampling.steps=50``); the sampling
settings are the config's (the release's: 50 steps, CFG 1.5, clips of 24 in a window of 80).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import inference_mesh
from vgpt_jax.models import clip_tokenizer
from vgpt_jax.models.clip_tokenizer import TokenizerConfig, tokenizer_programs
from vgpt_jax.models.video_gpt import abstract_params, inference_params, model_from_config
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.sample.sampler import Sampler, round_sizes

GIB = 2**30


class ProgramMemory(NamedTuple):
    """One compiled program's ``memory_analysis`` in GiB; ``peak``: argument + output + temp − alias."""

    name: str
    argument: float
    output: float
    temp: float
    alias: float

    @property
    def peak(self) -> float:
        return self.argument + self.output + self.temp - self.alias


def program_memory(name: str, compiled: jax.stages.Compiled) -> ProgramMemory:
    m = compiled.memory_analysis()
    sizes = (m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes, m.alias_size_in_bytes)
    return ProgramMemory(name, *(size / GIB for size in sizes))


def _condition(config: ml_collections.ConfigDict, batch: int) -> jax.ShapeDtypeStruct | None:
    """Abstract condition ids of ``batch`` rows, None without a condition."""
    kind = config.condition.kind
    if kind == "none":
        return None
    shape = (batch,) if kind == "class" else (batch, config_lib.condition_length(config))
    return jax.ShapeDtypeStruct(shape, jnp.int32)


def sampling_memory(
    config: ml_collections.ConfigDict, cond_frames: int, num_frames: int, mesh: jax.sharding.Mesh
) -> list[ProgramMemory]:
    """Every program of a prediction of ``num_frames`` after ``cond_frames`` (a batch of the
    Predictor's size on ``mesh``), compiled from abstract inputs, in the order they run."""
    tok_cfg = TokenizerConfig.from_config(config)
    tok = tokenizer_programs(tok_cfg, mesh)
    tok_params = clip_tokenizer.abstract_params(tok_cfg, mesh)
    d, s = config.data, config.sampling
    f = tok_cfg.downsample_factor
    pixels, latent = (d.latent_height * f, d.latent_width * f, 3), (d.latent_height, d.latent_width)
    batch = mesh_lib.data_parallel_size(mesh) * d.per_device_batch_size
    frames_sharding = clip_tokenizer.frames_sharding(mesh)
    key = jax.eval_shape(jax.random.key, 0)

    def frames(n: int, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:  # padded as ClipTokenizer._run
        return jax.ShapeDtypeStruct((n + -n % mesh.size, *shape), jnp.float32, sharding=frames_sharding)

    def clip(n: int) -> jax.ShapeDtypeStruct:
        shape = (batch, n, *latent, config.model.latent_channels)
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=mesh_lib.batch_sharding(mesh, 5))

    def compiled(name: str, program, *args: Any) -> ProgramMemory:
        print(f"compiling {name}", file=sys.stderr, flush=True)
        return program_memory(name, program.lower(*args).compile())

    latent_frame = (*latent, tok_cfg.latent_channels)
    out = [
        compiled(
            f"encode {batch}x{cond_frames} frames",
            tok.encode,
            tok_params,
            frames(batch * cond_frames, pixels),
            key,
        )
    ]
    model = model_from_config(config)
    sampler = Sampler(config, model)
    # as the Predictor holds them (projection kernels in the compute dtype or float8 with their
    # scales), each on the sharding of the array it came from; the scales replicated
    stored = traverse_util.flatten_dict(abstract_params(config, mesh))
    held = traverse_util.flatten_dict(
        jax.eval_shape(lambda p: inference_params(model.cfg, p), traverse_util.unflatten_dict(stored))
    )
    params = traverse_util.unflatten_dict(
        {
            path: jax.ShapeDtypeStruct(
                a.shape,
                a.dtype,
                sharding=stored[path].sharding if path in stored else mesh_lib.replicated(mesh),
            )
            for path, a in held.items()
        }
    )
    condition = _condition(config, batch)
    seen: set[tuple[int, int]] = set()
    for history, g in round_sizes(cond_frames, num_frames, s.clip_frames, s.window_frames):
        if (history, g) in seen:
            continue
        seen.add((history, g))
        with sharding_context(mesh, config.mesh.logical_axis_rules):
            out.append(
                compiled(
                    f"sample_clip {batch}x({history} history + {g}), {s.steps} steps, CFG {s.cfg_scale}",
                    sampler.jitted_sample_clip,
                    params,
                    clip(history),
                    clip(g),
                    condition,
                )
            )
        out.append(
            compiled(
                f"decode {batch}x{g} frames", tok.decode, tok_params, frames(batch * g, latent_frame), True
            )
        )
        out.append(
            compiled(f"encode {batch}x{g} frames", tok.encode, tok_params, frames(batch * g, pixels), key)
        )
    return out


def print_table(rows: Sequence[ProgramMemory]) -> None:
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}  (GiB)")
    print(f"{'program':<58} {'argument':>9} {'output':>8} {'temp':>8} {'alias':>7} {'peak':>8}")
    for r in rows:
        print(f"{r.name:<58} {r.argument:9.3f} {r.output:8.3f} {r.temp:8.3f} {r.alias:7.3f} {r.peak:8.3f}")
    top = max(rows, key=lambda r: r.peak)
    print(f"largest: {top.name}, peak {top.peak:.2f} GiB (temp {top.temp:.2f})")


def parse_size(text: str) -> tuple[int, int]:
    """``"176x320"`` -> (height, width)."""
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH in pixels, e.g. 176x320")
    return int(height), int(width)


def with_frame_size(config: ml_collections.ConfigDict, height: int, width: int) -> ml_collections.ConfigDict:
    """``config`` with the latent size of ``height`` x ``width`` frames (multiples of the
    tokenizer's downsampling, as ``vgpt sample`` brings its input to)."""
    f = TokenizerConfig.from_config(config).downsample_factor
    if height % f or width % f:
        raise ValueError(f"frame size {height}x{width}: both sides must be multiples of {f}")
    return config_lib.apply_overrides(
        config, [f"data.latent_height={height // f}", f"data.latent_width={width // f}"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="an experiment FILE[:ARG]")
    p.add_argument("--frame-size", type=parse_size, help="HEIGHTxWIDTH in pixels (default: the config's)")
    p.add_argument("--cond-frames", type=int, default=56, help="conditioning frames K (default 56)")
    p.add_argument("--num-frames", type=int, default=24, help="predicted frames M (default 24)")
    args, rest = p.parse_known_args(argv)
    overrides = [a.removeprefix("--config.") for a in rest if a.startswith("--config.")]
    if len(overrides) != len(rest):
        p.error(f"unknown arguments {[a for a in rest if not a.startswith('--config.')]}")
    config = config_lib.load_experiment(args.config, overrides)
    if args.frame_size:
        config = with_frame_size(config, *args.frame_size)
    config = config_lib.validate(config)
    print_table(sampling_memory(config, args.cond_frames, args.num_frames, inference_mesh(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
