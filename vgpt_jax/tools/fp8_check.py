"""GPU check of ``model.fp8_projections``: each projection of a layer at the sampler's shapes, in
the model's dtype and in float8, timed, with the relative error against fp32 and the custom calls
XLA lowered the float8 product to (a cuBLASLt fp8 gemm, or an upcast); float8 both with the kernel
quantized at every call and stored quantized (as sampling holds it).

    PYTHONPATH=$PWD python3 -m vgpt_jax.tools.fp8_check [--tokens 10656] [--config EXPERIMENT]

The default is the 3.76 B sampler's step (``videogpt_stage4``): 24 frames x 222 tokens x 2 CFG rows.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from vgpt_jax import config as config_lib
from vgpt_jax.nn.fp8 import projection, scaled_fp8

REPS = 20


def projections(config) -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """name -> (einsum spec, activation shape without tokens, kernel shape) of one layer."""
    m = config.model
    d, h = m.hidden_size, m.num_heads
    return {
        "qkv": ("btd,dshk->btshk", (d,), (d, 3, h, d // h)),
        "out": ("bthk,hkd->btd", (h, d // h), (h, d // h, d)),
        "gate_up": ("btd,dgf->btgf", (d,), (d, 2, m.mlp_dim)),
        "down": ("btf,fd->btd", (m.mlp_dim,), (m.mlp_dim, d)),
    }


def time_call(fn, *args) -> float:
    """Seconds a call, over REPS calls after a warm one."""
    fn(*args).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(REPS):
        out = fn(*args)
    out.block_until_ready()
    return (time.perf_counter() - t0) / REPS


def check(config, tokens: int) -> list[dict]:
    dtype = jnp.dtype(config.model.dtype)
    rows = []
    for name, (spec, x_shape, k_shape) in projections(config).items():
        x = jax.random.normal(jax.random.key(0), (1, tokens, *x_shape), jnp.float32)
        kernel = jax.random.normal(jax.random.key(1), k_shape, jnp.float32) * 0.02
        exact = jnp.einsum(spec, x, kernel, precision="highest")
        row = {"projection": name, "tokens": tokens}
        xa, ka = x.astype(dtype), kernel.astype(dtype)
        stored = scaled_fp8(kernel)  # as inference_params holds it: quantized once
        variants = {
            "dtype": (lambda a, b, spec=spec: projection(spec, a, b, dtype, False), (xa, ka)),
            "fp8": (lambda a, b, spec=spec: projection(spec, a, b, dtype, True), (xa, ka)),
            "fp8_stored": (lambda a, q, s, spec=spec: projection(spec, a, q, dtype, True, s), (xa, *stored)),
        }
        flops = 2 * tokens * int(np.prod(k_shape))
        for label, (fn, args) in variants.items():
            fn = jax.jit(fn)
            out = fn(*args).astype(jnp.float32)
            seconds = time_call(fn, *args)
            hlo = fn.lower(*args).compile().as_text()
            row[label] = {
                "ms": round(1e3 * seconds, 3),
                "tflops": round(flops / seconds / 1e12, 1),
                "rel_err": float(jnp.linalg.norm(out - exact) / jnp.linalg.norm(exact)),
                "custom_calls": sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo))),
            }
        row["speedup"] = round(row["dtype"]["ms"] / row["fp8"]["ms"], 2)
        row["speedup_stored"] = round(row["dtype"]["ms"] / row["fp8_stored"]["ms"], 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/videogpt_stage4.py")
    parser.add_argument("--tokens", type=int, default=24 * 222 * 2)
    args = parser.parse_args(argv)
    config = config_lib.load_experiment(args.config)
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}")
    for row in check(config, args.tokens):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
