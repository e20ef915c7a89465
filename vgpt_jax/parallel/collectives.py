"""Bytes moved by the collectives of a compiled program, read from its HLO text.

After SPMD partitioning every shape in the HLO is one device's, so the bytes of a collective's
result are what one device holds after it: the whole gathered array for an all-gather, the
reduced array for an all-reduce, the device's shard for a reduce-scatter. Ops inside a ``while``
body (the scanned layers, the query chunks of the XLA attention) run once per iteration, so they
are counted the loop's known trip count times; a loop whose trip count XLA does not know counts
once (a lower bound).
"""

from __future__ import annotations

import functools
import math
import re

from jax.stages import Compiled

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")

# bits per element of the HLO primitive types a program can hold
ELEMENT_BITS = {
    "pred": 8,
    **{f"{t}{b}": b for t in ("s", "u") for b in (4, 8, 16, 32, 64)},
    **{f"f{b}": b for b in (16, 32, 64)},
    "bf16": 16,
    **{t: 8 for t in ("f8e4m3fn", "f8e5m2", "f8e4m3fnuz", "f8e5m2fnuz", "f8e4m3b11fnuz", "f8e4m3", "f8e3m4")},
    "c64": 64,
    "c128": 128,
    "token": 0,
}

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.-]+)\s.*\{\s*$")
# `%name = SHAPE opcode(`: the shape may be a tuple, so it is everything up to the opcode
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.-]+\s*=\s*(?P<shape>.*?)\s(?P<op>[a-z][\w-]*)\(")
_ARRAY = re.compile(r"\b([a-z]\w*)\[([\d,]*)\]")
_CALLEES = re.compile(
    r"\b(?:body|condition|calls|to_apply|branch_computations|true_computation|false_computation)="
    r"(\{[^}]*\}|%?[\w.-]+)"
)
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape, e.g. ``bf16[2,3]{1,0}`` -> 12; a tuple's arrays are summed."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in ELEMENT_BITS:
            raise ValueError(f"unknown HLO element type {dtype!r} in {shape!r}")
        elements = math.prod(int(d) for d in dims.split(",") if d)
        total += -(-elements * ELEMENT_BITS[dtype] // 8)
    return total


def _collective(op: str) -> str | None:
    """The kind an opcode is counted as, or None. An async pair is counted at its ``-done``, whose
    result is the collective's (a ``-start``'s tuple also holds the operands and scratch)."""
    kind = op.removesuffix("-done")
    return kind if kind in KINDS and not op.endswith("-start") else None


def _parse(hlo: str) -> tuple[str, dict[str, dict[str, int]], dict[str, list[tuple[str, int]]]]:
    """HLO text -> (entry computation, per computation its own bytes by kind, its callees with how
    many times each runs per call)."""
    entry, name = "", ""
    own: dict[str, dict[str, int]] = {}
    calls: dict[str, list[tuple[str, int]]] = {}
    for line in hlo.splitlines():
        if not line.startswith((" ", "\t", "}")) and (header := _COMPUTATION.match(line)):
            name = header.group(1)
            entry = name if line.startswith("ENTRY") else entry
            own[name], calls[name] = dict.fromkeys(KINDS, 0), []
            continue
        instruction = _INSTRUCTION.match(line)
        if not name or instruction is None:
            continue
        op = instruction.group("op")
        if kind := _collective(op):
            own[name][kind] += shape_bytes(instruction.group("shape"))
        if op.endswith("-done"):  # an async-done names the start's computation again
            continue
        trip = _TRIP_COUNT.search(line)
        times = int(trip.group(1)) if op == "while" and trip else 1
        for group in _CALLEES.findall(line[instruction.end() :]):
            calls[name] += [(callee.lstrip("%"), times) for callee in re.findall(r"[\w.-]+", group)]
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return entry, own, calls


def collective_bytes(program: Compiled | str) -> dict[str, int]:
    """Bytes per device of one run of ``program`` (a jax ``Compiled`` or its ``as_text()``), by
    collective kind (:data:`KINDS`): the sum of the collectives' result shapes, loops unrolled."""
    entry, own, calls = _parse(program if isinstance(program, str) else program.as_text())

    @functools.cache
    def total(name: str) -> tuple[int, ...]:
        sums = [own[name][k] for k in KINDS]
        for callee, times in calls[name]:
            sums = [s + times * c for s, c in zip(sums, total(callee), strict=True)]
        return tuple(sums)

    return dict(zip(KINDS, total(entry), strict=True))
