"""``make bench``: time the train step and the sampler on the current device; print one table.

For each train config: step time, tokens/s, model TFLOP/s and MFU, peak device memory, and the
bytes per device its compiled step moves by collective kind (:mod:`vgpt_jax.parallel.collectives`;
one line under the table, in MiB). MFU uses the comparator's definition
(``shared/bench/official_torch_step.py``): model FLOPs without recompute, 3 × forward, dense
matmuls 2·P·T with P the parameters outside the token table, and attention 4·layers·D·T² counted
on the visible fraction of the official mask, against a bf16 matmul peak measured in the same run.
T is the official sequence length of the comparator's clip partition (its seeded draw); our step
also computes the clean copies of the last clip, which count as overhead, not as tokens.

  vgpt bench --train experiments/videogpt_1b.py --sample experiments/videogpt_1b.py

``--official PATH`` (``make bench OFFICIAL_BENCH=PATH``) also runs the comparator, the official
compute path in PyTorch, on every train and sample row with the same dimensions, frames, tokens
per frame, clip-partition seed and matmul peak, in a subprocess on the same device, and adds its
step time, tokens/s, MFU and peak memory and our speed-up over it to the row.

The tokenizer row times encode and decode frames/s of the SDXL-size VAE (random weights, fp32) at
320x176 (``--tokenizer CONFIG ...``; on a CPU the tiny tokenizer at 64x64; ``--tokenizer`` alone skips).

``--features CONFIG ...`` adds rows of `vgpt features`' extraction speed (tokenizer encode and the
clean stream through ``--feature-layers``' deepest layer, random weights) in clips/s at
``--feature-clip`` (16 frames of 320x240 by default), with the minutes one clip of each of
UCF-101's 13,320 videos would take.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgpt_jax import config as config_lib
from vgpt_jax.device_stats import device_memory_gib
from vgpt_jax.models.video_gpt import inference_params, model_from_config, num_params, random_params
from vgpt_jax.parallel.collectives import collective_bytes
from vgpt_jax.parallel.mesh import data_parallel_size, make_mesh, sharding_context
from vgpt_jax.sample.sampler import Sampler
from vgpt_jax.tools import profile
from vgpt_jax.train.flops import matmul_peak, official_partition, train_step_flops, visible_fraction
from vgpt_jax.train.loop import planned_memory_bytes
from vgpt_jax.train.step import Trainer, apply_gradients


def parse_row(row: str) -> tuple[str, str, list[str]]:
    """A train row ``CONFIG[:ARG][@FRAMES][:FIELD=VALUE]...`` -> (experiment spec, frames or '',
    overrides): the experiment's argument, another number of frames and overrides of this row
    only, e.g. ``experiments/videogpt_stage4.py@48:model.remat_policy=attention`` or
    ``experiments/videogpt_stage4.py:runlocal@32``."""
    parts = row.split(":")
    # the experiment's argument, unlike an override, has no '='
    first_override = next((i for i, part in enumerate(parts[1:], 1) if "=" in part), len(parts))
    spec, _, frames = ":".join(parts[:first_override]).partition("@")
    return spec, frames, parts[first_override:]


def load_row_config(row: str, overrides: Sequence[str] = ()):
    """The config of a train row (:func:`parse_row`), the row's overrides after ``overrides``."""
    path, frames, row_overrides = parse_row(row)
    config = config_lib.load_experiment(path, [*overrides, *row_overrides])
    if frames:
        config.data.num_frames = int(frames)
    return config


def peak_memory_gib() -> float | None:
    return device_memory_gib()["peak_memory_gib"] or None  # None on a CPU


def comparator_args(config, mode: str, **sizes: int) -> list[str]:
    """The comparator's flags for a config: the same backbone, tokens per frame and patch size, plus
    the row's ``sizes`` (frames, seed, steps / history, generate, denoise steps)."""
    m = config.model
    flags = {
        "mode": mode,
        "hidden": m.hidden_size,
        "layers": m.num_layers,
        "heads": m.num_heads,
        "kv-heads": m.num_kv_heads,
        "mlp": m.mlp_dim,
        "vocab": m.vocab_size,
        "patch-dim": m.patch_size**2 * m.latent_channels,
        "tokens-per-frame": config_lib.sizes(config).tokens_per_frame,
        "theta": m.rope.theta,
        **{k.replace("_", "-"): v for k, v in sizes.items()},
    }
    return [f"--{k}={v}" for k, v in flags.items()]


def run_comparator(script: str, args: list[str]) -> dict:
    """Runs the official-path comparator with ``args``; returns its JSON line (or the error)."""
    print("comparator:", " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    return json.loads(lines[-1])


def with_comparator(row: dict, official: dict | None, time_key: str, peak: float) -> dict:
    """Adds the comparator's columns and our speed-up to a row: its time / ours per clip for a
    sample row, our tokens/s / its tokens/s for a train row (ours may run several sequences). Its
    MFU is taken against our measured peak, so both MFUs share one denominator."""
    if official is None:
        return row
    row["official"] = official
    if "error" in official or not official.get(time_key) or time_key not in row:
        return row
    row["official_" + time_key] = official[time_key]
    row["official_tokens_per_s"] = official.get("tokens_per_s")
    row["official_mfu"] = round(official["model_tflops_per_s"] / peak, 4)
    row["official_max_mem_gib"] = official.get("max_mem_gib")
    if time_key == "clip_s":
        row["speedup"] = round(official["clip_s"] / row["clip_s"], 2)
    else:
        row["speedup"] = round(row["tokens_per_s"] / official["tokens_per_s"], 2)
    return row


def parse_mesh(text: str) -> dict[str, int]:
    """``"fsdp=2,sequence=1"`` -> mesh sizes over the config's; the default is FSDP over every device."""
    sizes = {"data": 1, "fsdp": -1, "tensor": 1, "sequence": 1}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in sizes or not value.lstrip("-").isdigit():
            raise ValueError(f"--mesh item {item!r}: expected AXIS=SIZE with AXIS one of {tuple(sizes)}")
        sizes[name] = int(value)
    return sizes


def mesh_text(sizes: dict[str, int]) -> str:
    """Mesh sizes as ``--mesh`` writes them, axes of size 1 left out (``fsdp=4,sequence=2``)."""
    return ",".join(f"{axis}={size}" for axis, size in sizes.items() if size != 1) or "one device"


def bench_train(
    path: str,
    steps: int,
    seed: int,
    peak: float,
    mesh: dict[str, int] | None = None,
    global_batch: int = 0,
    overrides: Sequence[str] = (),
    with_profile: bool = False,
) -> dict:
    """One train row; ``path`` as :func:`load_row_config` takes it.

    ``mesh``: mesh sizes (default: FSDP over every device; a row's ``mesh.AXIS=SIZE`` overrides
    win, so one run can time several meshes); ``global_batch``: sequences per step
    (0: one per data-parallel device). The row keeps every step's loss, so runs of one global
    batch on different meshes can be compared. ``with_profile`` adds ``profile``: two traced
    steps' device time by kernel kind (:mod:`vgpt_jax.profile`) and the optimiser update alone.
    """
    mesh_overrides = [f"mesh.{axis}={size}" for axis, size in (mesh or parse_mesh("")).items()]
    config = load_row_config(path, [*mesh_overrides, *overrides])
    config_path, _, row_overrides = parse_row(path)
    n = config.data.num_frames
    partition = official_partition(n, seed)
    config.layout.partition = "fixed"
    config.layout.fixed_partition = tuple(partition)
    device_mesh = make_mesh(config.mesh)
    if global_batch:
        parallel = data_parallel_size(device_mesh)
        if global_batch % parallel:
            raise ValueError(f"--global-batch {global_batch} is not a multiple of data x fsdp = {parallel}")
        config.data.per_device_batch_size = global_batch // parallel
    trainer = Trainer(config, device_mesh)
    sizes = trainer.sizes
    state = trainer.init()
    rng = np.random.default_rng(0)
    latents = rng.normal(size=trainer.batch_shape).astype(np.float32)
    batch = trainer.shard_batch({"target": latents, "clean": latents})
    t0 = time.perf_counter()
    step = trainer.compile(state, batch)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    collectives = collective_bytes(step)
    losses = [metrics["loss"]]
    state, metrics = step(state, batch)
    losses.append(metrics["loss"])
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])  # device scalars: read after the timing
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    devices = device_mesh.devices.size
    step_profile = None
    if with_profile:
        state, step_profile = profile_step(trainer, step, state, batch)

    planned = planned_memory_bytes(step)
    p_total = num_params(state.params)
    seq = (2 * n - partition[-1]) * sizes.block_len
    tokens = seq * trainer.global_batch
    vis = visible_fraction(partition, sizes.tokens_per_frame)
    frozen = trainer.trainable.adapters_only
    tflops = trainer.global_batch * train_step_flops(config, partition, p_total, frozen) / step_s / 1e12
    return {
        "row": " ".join(
            ["train", os.path.basename(config_path).replace(".py", ""), f"{n} frames", *row_overrides]
        ),
        "params": p_total,
        "partition_clips": len(partition),
        "seq_len": seq,
        "our_seq_len": sizes.seq_len,
        "visible_fraction": round(vis, 4),
        "mesh": dict(device_mesh.shape),
        "global_batch": trainer.global_batch,
        "losses": [float(x) for x in losses],
        "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 4),
        "tokens_per_s": round(tokens / step_s, 1),
        "tokens_per_s_per_device": round(tokens / step_s / devices, 1),
        "model_tflops_per_s": round(tflops, 1),
        "mfu": round(tflops / peak / devices, 4),
        "peak_mem_gib": peak_memory_gib(),
        # the row's own need, where the process's peak above also holds earlier rows'
        "planned_mem_gib": None if planned is None else round(planned / 2**30, 2),
        # per device and step, from the compiled program: what the mesh costs in communication
        "collective_mib": {kind: round(b / 2**20, 3) for kind, b in collectives.items()},
        **({"profile": step_profile} if step_profile else {}),
    }


def profile_step(trainer: Trainer, compiled_step, state, batch) -> tuple[Any, dict]:
    """Device time of two steps of ``compiled_step`` (``trainer``'s) by kernel kind, plus the
    optimiser update timed alone.

    Returns the advanced state (the step donates it) and the profile dict.
    """
    current = [state]

    def step():
        current[0], metrics = compiled_step(current[0], batch)
        return metrics

    summary = profile.profile(step, hlo_text=compiled_step.as_text())
    with sharding_context(trainer.mesh, trainer.axis_rules):
        update = jax.jit(
            lambda s, g: apply_gradients(s, g, trainer.optimizer, trainer.trainable),
            in_shardings=(
                trainer.state_shardings,
                trainer.trainable.split(trainer.state_shardings.params)[0],
            ),
            out_shardings=trainer.state_shardings,
            donate_argnums=(0,),
        )
        grads = jax.tree.map(lambda p: p * 1e-3, trainer.trainable.split(current[0].params)[0])
        current[0] = update(current[0], grads)  # compile
        jax.block_until_ready(current[0])
        t0 = time.perf_counter()
        for _ in range(3):
            current[0] = update(current[0], grads)
        jax.block_until_ready(current[0])
    summary["optimizer_ms"] = round((time.perf_counter() - t0) / 3 * 1e3, 2)
    return current[0], summary


def bench_sample(
    path: str,
    history: int,
    generate: int,
    steps: int,
    cfg_scale: float,
    mesh: dict[str, int] | None = None,
    overrides: Sequence[str] = (),
    with_profile: bool = False,
) -> dict:
    """One clip of ``generate`` frames after ``history``; the parameters are sharded over ``mesh``
    (default: tensor-parallel over every device, so one clip uses them all). With
    ``model.fp8_projections`` the row also samples the same inputs without it and reports how far
    the clips' x1 are apart (max and mean absolute difference, beside the mean |x1|).
    ``with_profile`` adds ``profile``: one traced clip's device time by kernel kind."""
    config = load_row_config(path, overrides)
    config_path, _, row_overrides = parse_row(path)
    config.sampling.update(
        steps=steps,
        cfg_scale=cfg_scale,
        clip_frames=generate,
        window_frames=history + generate,
        use_kv_cache=True,
    )
    config.mesh.update(**(mesh or parse_mesh("fsdp=1,tensor=-1")))
    config_lib.validate(config)
    device_mesh = make_mesh(config.mesh)
    model = model_from_config(config)

    sampler = Sampler(config, model)
    d = config.data
    shape = (1, history, d.latent_height, d.latent_width, config.model.latent_channels)
    hist = jax.random.normal(jax.random.key(2), shape, jnp.float32)
    noise = jax.random.normal(jax.random.key(3), (1, generate, *shape[2:]), jnp.float32)
    with sharding_context(device_mesh, config.mesh.logical_axis_rules):
        master = random_params(config, device_mesh)
        params = inference_params(model.cfg, master)  # as vgpt sample holds them
        total = num_params(master)
        if not config.model.fp8_projections:  # only the float8 reference reads the fp32 weights again
            del master  # so that the row's peak memory is vgpt sample's
        row = _time_clip(sampler, params, hist, noise)
        if with_profile:
            # its own compile, for the HLO text that names the kernels (the jit cache holds no text)
            hlo = sampler.jitted_sample_clip.lower(params, hist, noise, None).compile().as_text()
            row["profile"] = profile.profile(lambda: sampler.sample_clip(params, hist, noise), 1, hlo)
        if config.model.fp8_projections:
            exact = config_lib.with_fields(config, {"model.fp8_projections": False})
            exact_model = model_from_config(exact)
            exact_params = inference_params(exact_model.cfg, master)
            reference = Sampler(exact, exact_model).sample_clip(exact_params, hist, noise)
            row.update(_x1_difference(sampler.sample_clip(params, hist, noise), reference))
    return {
        "row": " ".join(
            [
                "sample",
                os.path.basename(config_path).replace(".py", ""),
                f"{history}+{generate} frames, {steps} steps, CFG {cfg_scale}",
                *row_overrides,
            ]
        ),
        "params": total,
        "mesh": dict(device_mesh.shape),
        **row,
        "frames_per_s": round(generate / row["clip_s"], 3),
        "clips_per_s": round(1 / row["clip_s"], 4),
        "peak_mem_gib": peak_memory_gib(),
    }


def _time_clip(sampler: Sampler, params, hist: jax.Array, noise: jax.Array) -> dict:
    """Compile time, then the time of one more clip, and whether it is finite."""
    t0 = time.perf_counter()
    sampler.sample_clip(params, hist, noise).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sampler.sample_clip(params, hist, noise)
    out.block_until_ready()
    clip_s = time.perf_counter() - t0
    return {
        "compile_s": round(compile_s, 1),
        "clip_s": round(clip_s, 3),
        "finite": bool(jnp.isfinite(out).all()),
    }


def _x1_difference(x1: jax.Array, reference: jax.Array) -> dict:
    diff = jnp.abs(x1.astype(jnp.float32) - reference.astype(jnp.float32))
    return {
        "x1_max_diff": float(diff.max()),
        "x1_mean_diff": float(diff.mean()),
        "x1_mean_abs": float(jnp.abs(reference.astype(jnp.float32)).mean()),
    }


def bench_data(workers: list[int]) -> list[dict]:
    """Decoded clips/s of the video pipeline (16 frames at 320x176 from 720p H.264), per worker count."""
    import tempfile

    from vgpt_jax.tools.throughput import decoded_clips_per_second, make_test_videos

    with tempfile.TemporaryDirectory() as tmp:
        videos = make_test_videos(tmp)
        return [
            {
                "row": f"data: decode 16x320x176 clips, {n} worker(s)",
                "clips_per_s": round(decoded_clips_per_second(n, video_dir=videos), 2),
            }
            for n in workers
        ]


def bench_tokenizer(path: str, frames: int, height: int, width: int, repeats: int = 3) -> dict:
    """Encode (posterior sample) and decode frames/s of a tokenizer config with random weights, fp32,
    over every device, in the config's chunks of frames."""
    from vgpt_jax.models.clip_tokenizer import ClipTokenizer

    config = config_lib.load_experiment(path)
    config.tokenizer.dtype = "float32"
    tok = ClipTokenizer.from_config(config, make_mesh(config.mesh))
    x = jax.device_put(
        jax.random.uniform(jax.random.key(0), (frames, height, width, 3), jnp.float32, -1.0, 1.0),
        tok.frames_sharding,
    )
    key = jax.random.key(1)

    def timed(fn, *args) -> tuple[float, jax.Array]:
        out = fn(*args).block_until_ready()  # compiles
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        out.block_until_ready()
        return (time.perf_counter() - t0) / repeats, out

    encode_s, latents = timed(tok.encode, x, key)
    decode_s, pixels = timed(tok.decode, latents)
    return {
        "row": f"tokenizer {path.rsplit('/', 1)[-1][:-3]} {frames} frames {width}x{height}",
        "params": sum(p.size for p in jax.tree.leaves(tok.params)),
        "chunk_frames": tok.cfg.chunk_frames,
        "encode_frames_per_s": round(frames / encode_s, 1),
        "decode_frames_per_s": round(frames / decode_s, 1),
        "finite": bool(jnp.isfinite(pixels).all()),
        "peak_mem_gib": peak_memory_gib(),
    }


UCF101_VIDEOS = 13320  # the videos of UCF-101 (both splits): one clip each for the probe


def bench_features(
    path: str,
    layers: Sequence[int],
    frames: int,
    height: int,
    width: int,
    batch_per_device: int,
    overrides: Sequence[str] = (),
) -> dict:
    """Clips/s of `vgpt features` (tokenizer encode, the clean stream through max(layers) layers,
    pooling) for a config with random weights, and the minutes one view of UCF-101 would take."""
    from vgpt_jax.evaluation.features import extraction_speed

    config = config_lib.load_experiment(path, overrides)
    row = extraction_speed(config, layers, frames, height, width, batch_per_device)
    return {
        "row": f"features {path.rsplit('/', 1)[-1][:-3]} layers {','.join(map(str, layers))}, "
        f"{frames} frames {width}x{height}",
        **row,
        "ucf101_min": round(UCF101_VIDEOS / row["clips_per_s"] / 60, 1),
        "peak_mem_gib": peak_memory_gib(),
    }


def print_table(rows: list[dict], peak: float) -> None:
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}  matmul peak {peak:.3g} TFLOP/s")
    cols = [
        "row",
        "step_s",
        "clip_s",
        "tokens_per_s",
        "model_tflops_per_s",
        "mfu",
        "official_step_s",
        "official_clip_s",
        "official_tokens_per_s",
        "official_mfu",
        "official_max_mem_gib",
        "speedup",
        "clips_per_s",
        "ucf101_min",
        "encode_frames_per_s",
        "decode_frames_per_s",
        "peak_mem_gib",
        "planned_mem_gib",
        "error",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(
            " | ".join(str(r.get(c, "")) if not isinstance(r.get(c), float) else f"{r[c]:.4g}" for c in cols)
        )
    for r in rows:
        if any(r.get("collective_mib", {}).values()):
            parts = ", ".join(f"{kind} {mib} MiB" for kind, mib in r["collective_mib"].items() if mib)
            print(f"collectives of {r['row']}, {mesh_text(r['mesh'])} (per device and step): {parts}")
    for r in rows:
        if "x1_max_diff" in r:
            print(
                f"x1 of {r['row']} against the same clip without float8: max |diff| {r['x1_max_diff']:.4g}, "
                f"mean |diff| {r['x1_mean_diff']:.4g} (mean |x1| {r['x1_mean_abs']:.4g})"
            )
    for r in rows:
        if "profile" in r:
            pr = r["profile"]
            parts = ", ".join(f"{k.removesuffix('_ms')} {pr[k]} ms" for k in pr if k.endswith("_ms"))
            unit = "clip" if r["row"].startswith("sample") else "step"
            print(f"profile of {r['row']} (per {unit}): {parts}")
            for kind, kernels in pr["top_kernels"].items():
                named = (f"{name} {ms} ms" + (f" ({op[0]})" if op else "") for name, ms, *op in kernels)
                print(f"  top {kind}: " + "; ".join(named))
            for name, st in pr.get("attention_calls", {}).items():
                print(
                    f"  {name}: {st['per_call']:g} a {unit}, {st['min_ms']} / {st['median_ms']} / "
                    f"{st['max_ms']} ms (min / median / max)"
                )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``vgpt bench`` (``--config.a.b=VALUE`` overrides every row's config)."""
    p.add_argument(
        "--train",
        nargs="*",
        default=None,
        help="configs (CONFIG[:ARG][@FRAMES][:FIELD=VALUE]...) to time a step of (default: 1 B)",
    )
    p.add_argument(
        "--sample",
        nargs="*",
        default=None,
        help="configs (CONFIG[:ARG][:FIELD=VALUE]...) to sample a clip of (default: 1 B)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed train steps after 2 warm-ups")
    p.add_argument(
        "--mesh",
        default="",
        help="train mesh sizes, e.g. fsdp=2 or fsdp=1,sequence=2 (default: FSDP); a row's "
        ":mesh.AXIS=SIZE overrides win",
    )
    p.add_argument("--global-batch", type=int, default=0, help="train sequences per step (0: one per device)")
    p.add_argument(
        "--sample-mesh", default="fsdp=1,tensor=-1", help="sampling mesh sizes (default: tensor-parallel)"
    )
    p.add_argument("--seed", type=int, default=0, help="clip-partition seed (the comparator's --seed)")
    p.add_argument("--history", type=int, default=56)
    p.add_argument("--generate", type=int, default=24)
    p.add_argument("--denoise-steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument(
        "--peak-tflops", type=float, default=0.0, help="0 = measure a matmul (bf16; fp32 on a CPU)"
    )
    p.add_argument("--data-workers", type=int, nargs="*", default=[1, 4], help="decode rows (none: skip)")
    p.add_argument(
        "--tokenizer",
        nargs="*",
        default=None,
        help="tokenizer configs to time encode/decode of (default: the SDXL VAE at 320x176; none: skip)",
    )
    p.add_argument("--tokenizer-frames", type=int, default=32, help="frames per encode/decode call")
    p.add_argument(
        "--features",
        nargs="*",
        default=[],
        help="configs to time feature extraction of (vgpt features, random weights; default: none)",
    )
    p.add_argument("--feature-layers", default="8,16,24", help="layers of the features rows")
    p.add_argument(
        "--feature-clip",
        default="16x240x320",
        help="FRAMESxHEIGHTxWIDTH of a features clip (default 16x240x320)",
    )
    p.add_argument("--feature-batch", type=int, default=4, help="clips per device of the features rows")
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument(
        "--profile", action="store_true", help="trace the train and sample rows: device time by kernel kind"
    )
    p.add_argument(
        "--official",
        default="",
        help="the official-path comparator (official_torch_step.py): run beside every train/sample row",
    )


def run(a: argparse.Namespace, overrides: Sequence[str] = ()) -> None:
    """Times every row the flags ``a`` ask for; ``overrides`` (``FIELD=VALUE``) apply to every row."""
    if a.official:
        # the comparator runs in a subprocess on the same device: let JAX take memory as it goes
        # rather than 75% of it at start. The growing pool keeps the 75% cap unless told
        # otherwise, and under it the 3.76 B "attention" rows (84 GiB at 48 frames on an H200)
        # ran out of memory on fragmentation.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    default = "experiments/videogpt_1b.py"
    if jax.default_backend() == "cpu" and a.train is None and a.sample is None:
        # The GPU-sized defaults would take hours on a CPU: time the tiny config instead.
        print("no accelerator: timing experiments/tiny_cpu.py (pass --train/--sample to override)")
        default = "experiments/tiny_cpu.py"
        a.history, a.generate, a.denoise_steps = 4, 4, 10
    tokenizer_size = (176, 320)
    if jax.default_backend() == "cpu" and a.tokenizer is None:
        print("no accelerator: timing the tokenizer of experiments/tiny_cpu.py at 64x64")
        a.tokenizer, tokenizer_size = ["experiments/tiny_cpu.py"], (64, 64)
    a.tokenizer = ["experiments/tokenizer_sdxl.py"] if a.tokenizer is None else a.tokenizer
    a.train = [default] if a.train is None else a.train
    a.sample = [default] if a.sample is None else a.sample
    on_cpu = jax.default_backend() == "cpu"  # CPUs emulate bf16: take their fp32 peak instead
    peak = a.peak_tflops or (matmul_peak(1024, dtype=jnp.float32) if on_cpu else matmul_peak())
    official: dict[str, dict] = {}
    if a.official:  # first, while our process holds almost none of the device's memory
        for path in a.train:
            config = load_row_config(path, overrides)
            args = comparator_args(config, "train", frames=config.data.num_frames, seed=a.seed, steps=a.steps)
            official[f"train {path}"] = run_comparator(a.official, args)
        for path in a.sample:
            args = comparator_args(
                load_row_config(path, overrides),
                "sample",
                history=a.history,
                generate=a.generate,
                denoise_steps=a.denoise_steps,
            )
            official[f"sample {path}"] = run_comparator(a.official, args)
    jobs = [
        (
            f"train {path}",
            lambda path=path: bench_train(
                path, a.steps, a.seed, peak, parse_mesh(a.mesh), a.global_batch, overrides, a.profile
            ),
        )
        for path in a.train
    ]
    jobs += [
        (
            f"sample {path}",
            lambda path=path: bench_sample(
                path,
                a.history,
                a.generate,
                a.denoise_steps,
                a.cfg,
                parse_mesh(a.sample_mesh),
                overrides,
                a.profile,
            ),
        )
        for path in a.sample
    ]
    jobs += [
        (
            f"tokenizer {path}",
            lambda path=path: bench_tokenizer(path, a.tokenizer_frames, *tokenizer_size),
        )
        for path in a.tokenizer
    ]
    feature_layers = [int(layer) for layer in a.feature_layers.split(",")]
    clip = [int(n) for n in a.feature_clip.split("x")]
    jobs += [
        (
            f"features {path}",
            lambda path=path: bench_features(path, feature_layers, *clip, a.feature_batch, overrides),
        )
        for path in a.features
    ]
    if a.data_workers:
        jobs.append(("data", lambda: bench_data(a.data_workers)))
    rows = []
    for name, job in jobs:
        try:
            result = job()
            if name in official:
                result = with_comparator(
                    result, official[name], "step_s" if "train" in name else "clip_s", peak
                )
            rows.extend(result if isinstance(result, list) else [result])
        except Exception as e:  # noqa: BLE001 - a row that does not fit (e.g. out of memory) is reported, not fatal
            rows.append({"row": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, peak)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"device": jax.devices()[0].device_kind, "peak_tflops": peak, "rows": rows}, f, indent=1
            )
