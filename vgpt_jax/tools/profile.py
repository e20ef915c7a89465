"""Where a jitted program's device time goes: a JAX profiler trace, its kernels summed by kind.

``bench --profile`` uses it on the train step. The trace is JAX's own (``jax.profiler.trace`` with a
Perfetto JSON, no TensorFlow needed); a kernel's kind comes from its name:

- ``attention``: our Pallas kernels (``block_sparse_attention_*``), cuDNN/flash attention;
- ``matmul``: cuBLAS / cuBLASLt / CUTLASS GEMMs and XLA's Triton GEMM fusions;
- ``other``: every other kernel (norms, RoPE, elementwise fusions, the optimiser update, copies).

The host's share is the wall time the device was idle: ``wall − busy``, ``busy`` being the union
of the kernels' intervals over all streams. Given the compiled program's HLO text, each of the
largest kernels is also named by the JAX operation it runs (:func:`kernel_ops`: the name stack,
e.g. ``.../layers/attention/pad``), which says what an ``input_transpose_fusion`` is.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import jax

KERNEL_KINDS = (
    ("attention", re.compile(r"attention|flash|fmha|cudnn", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|cutlass|nvjet|xmma|cublas|wgmma|triton_gemm|dot_general", re.IGNORECASE)),
)
TOP_KERNELS = 10  # per kind, in the summary


def kernel_kind(name: str) -> str:
    """'attention', 'matmul' or 'other' for a device kernel's name."""
    for kind, pattern in KERNEL_KINDS:
        if pattern.search(name):
            return kind
    return "other"


# An HLO instruction with its metadata's op_name: `%name = ... metadata={op_name="..." ...}`.
_INSTRUCTION_OP = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*metadata=\{[^}]*op_name="([^"]*)"', re.MULTILINE
)


def kernel_ops(hlo_text: str) -> dict[str, str]:
    """Kernel name -> the op name (JAX's name stack, ``jit(...)/`` dropped) of the HLO instruction
    it runs, from a compiled module's text (``compiled.as_text()``). A GPU kernel is named after its
    instruction, with '.' and '-' written '_'; a fusion carries its root's op name."""
    return {
        re.sub(r"[.\-]", "_", name): re.sub(r"^jit\([^)]*\)/", "", op)
        for name, op in _INSTRUCTION_OP.findall(hlo_text)
    }


def device_kernels(trace_events: list[dict]) -> list[tuple[str, float, float]]:
    """(name, start µs, duration µs) of the kernels on the devices' streams of a Perfetto trace.

    Device processes are named ``/device:...``; their kernel rows are the ``Stream`` threads (the
    trace also has per-op and per-module rows, which would count the same time twice).
    """
    processes = {
        e["pid"]
        for e in trace_events
        if e.get("ph") == "M" and e.get("name") == "process_name" and "/device:" in e["args"]["name"]
    }
    streams = {
        (e["pid"], e["tid"])
        for e in trace_events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e["pid"] in processes
        and "stream" in e["args"]["name"].lower()
    }
    return [
        (e["name"], float(e["ts"]), float(e["dur"]))
        for e in trace_events
        if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams
    ]


def busy_time(kernels: list[tuple[str, float, float]]) -> float:
    """Length of the union of the kernels' [start, start + duration) intervals, µs."""
    busy, end = 0.0, float("-inf")
    for _, start, duration in sorted(kernels, key=lambda k: k[1]):
        stop = start + duration
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def summarize(
    kernels: list[tuple[str, float, float]], wall_us: float, calls: int, ops: dict[str, str] | None = None
) -> dict[str, Any]:
    """Per-call milliseconds by kind, the device's idle share and the largest kernels of each kind:
    ``[name, ms]``, or ``[name, ms, op name]`` where ``ops`` (:func:`kernel_ops`) knows the kernel;
    ``attention_calls``: each attention kernel's launches per call and min/median/max duration."""
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    attention_calls: dict[str, list[float]] = defaultdict(list)
    for name, _, duration in kernels:
        kind = kernel_kind(name)
        by_kind[kind] += duration
        by_name[name] += duration
        if kind == "attention":
            attention_calls[name].append(duration)
    busy = busy_time(kernels)
    per_call = lambda us: round(us / calls / 1e3, 2)  # noqa: E731
    ops = ops or {}
    top = {
        kind: [
            [name[:80], per_call(us)] + ([ops[name][-100:]] if name in ops else [])
            for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])
            if kernel_kind(name) == kind
        ][:TOP_KERNELS]
        for kind in ("attention", "matmul", "other")
    }
    return {
        **{f"{kind}_ms": per_call(by_kind.get(kind, 0.0)) for kind in ("attention", "matmul", "other")},
        "device_busy_ms": per_call(busy),
        "host_idle_ms": per_call(max(wall_us - busy, 0.0)),
        "wall_ms": per_call(wall_us),
        "kernels": len(kernels) // calls,
        "top_kernels": top,
        # A kernel slower in one call than in another shows here, not in the sums.
        "attention_calls": {
            name[:80]: {
                "per_call": len(durations) / calls,
                "min_ms": round(min(durations) / 1e3, 3),
                "median_ms": round(statistics.median(durations) / 1e3, 3),
                "max_ms": round(max(durations) / 1e3, 3),
            }
            for name, durations in attention_calls.items()
        },
    }


def profile(run: Callable[[], Any], calls: int = 2, hlo_text: str = "") -> dict[str, Any]:
    """Traces ``calls`` back-to-back calls of ``run`` (already compiled and warm) and summarizes them.

    Returns :func:`summarize`'s dict, the largest kernels named by their op where ``hlo_text`` (the
    compiled program's) has them; on a platform whose trace has no device streams (a CPU) the kind
    times are 0 and everything is host time.
    """
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            out = None
            for _ in range(calls):
                out = run()
            jax.block_until_ready(out)
            wall_us = (time.perf_counter() - start) * 1e6
        files = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
        if not files:
            raise RuntimeError(f"jax.profiler.trace wrote no Perfetto trace under {log_dir}")
        with gzip.open(files[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return summarize(device_kernels(events), wall_us, calls, kernel_ops(hlo_text))
