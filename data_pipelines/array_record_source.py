"""ArrayRecord shards of pixel clips or per-frame latents: the record format, a writer, a Grain source.

On disk, a dataset is one folder::

    DIR/index.json                 {"format": "vgpt_jax.clips", "version": 1, "kind": "pixels" | "latents",
                                    "num_records": N, "shards": [{"file": ..., "num_records": n}, ...],
                                    "fields": {name: dtype}, "meta": {...}}
    DIR/clips-00000.array_record   records, written with group_size 1 (cheap random access)

A record holds named arrays whose first axis is the frame axis (all with the same length T), plus
a small JSON ``meta`` dict::

    b"VGPTREC1" | uint32 LE header length | header JSON (UTF-8) | padding | array bytes

The header is ``{"arrays": [{"name", "dtype", "shape", "offset"}], "meta": {...}}``; ``offset`` counts
from the start of the record and is a multiple of 16, each array is C-ordered. dtypes are NumPy
names; ``bfloat16`` and the float8 types come from ``ml_dtypes``. Pixel clips store ``video``
(T, H, W, 3) uint8 RGB; latents are whatever the tokenizer job writes (e.g. ``latents``
(T, h, w, C)) and are sampled along the frame axis like pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
from array_record.python import array_record_module

MAGIC = b"VGPTREC1"
FORMAT = "vgpt_jax.clips"
VERSION = 1
INDEX_FILE = "index.json"
KINDS = ("pixels", "latents")
_ALIGN = 16


@dataclasses.dataclass(frozen=True)
class StoredClip:
    """A stored clip in memory: named arrays with a shared leading frame axis, and JSON ``meta``."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(next(iter(self.arrays.values())))


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(getattr(ml_dtypes, name))


def encode_record(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """Serialises named arrays (+ JSON-able ``meta``) into one record of the format above."""
    specs, offset = [], 0
    for name, array in arrays.items():
        array = np.asarray(array)
        specs.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape), "offset": offset})
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"arrays": specs, "meta": dict(meta or {})}).encode()
    prefix = len(MAGIC) + 4 + len(header)
    start = -(-prefix // _ALIGN) * _ALIGN
    out = bytearray(start + offset)
    out[: len(MAGIC)] = MAGIC
    out[len(MAGIC) : len(MAGIC) + 4] = struct.pack("<I", len(header))
    out[len(MAGIC) + 4 : prefix] = header
    for spec, array in zip(specs, arrays.values(), strict=True):
        data = np.ascontiguousarray(array).tobytes()
        spec_start = start + spec["offset"]
        out[spec_start : spec_start + len(data)] = data
    return bytes(out)


def decode_record(record: bytes) -> StoredClip:
    """The clip in one record; its arrays are read-only views of ``record``."""
    if record[: len(MAGIC)] != MAGIC:
        raise ValueError(f"not a {FORMAT} record (starts with {record[:8]!r}, expected {MAGIC!r})")
    (header_len,) = struct.unpack("<I", record[len(MAGIC) : len(MAGIC) + 4])
    prefix = len(MAGIC) + 4 + header_len
    header = json.loads(record[len(MAGIC) + 4 : prefix])
    start = -(-prefix // _ALIGN) * _ALIGN
    arrays = {}
    for spec in header["arrays"]:
        dtype = _dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        flat = np.frombuffer(record, dtype=dtype, count=count, offset=start + spec["offset"])
        arrays[spec["name"]] = flat.reshape(spec["shape"])
    return StoredClip(arrays, header["meta"])


class ClipRecordWriter:
    """Writes a clip dataset folder; use as a context manager (the index is written on close).

    Every record must have the same field names and dtypes; shapes (length, resolution) may vary.
    """

    def __init__(self, directory: str, kind: str = "pixels", records_per_shard: int = 1024, meta=None):
        if kind not in KINDS:
            raise ValueError(f"kind = {kind!r} is not allowed: one of {KINDS}")
        os.makedirs(directory, exist_ok=True)
        self.directory, self.kind, self.records_per_shard = directory, kind, records_per_shard
        self.meta = dict(meta or {})
        self.fields: dict[str, str] | None = None
        self.shards: list[dict[str, Any]] = []
        self._writer = None

    def write(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
        fields = {name: np.asarray(a).dtype.name for name, a in arrays.items()}
        lengths = {np.shape(a)[0] if np.ndim(a) else None for a in arrays.values()}
        if len(lengths) != 1 or None in lengths:
            raise ValueError(
                f"every array of a record needs the same leading frame axis; got shapes "
                f"{ {n: np.shape(a) for n, a in arrays.items()} }"
            )
        if self.fields is None:
            self.fields = fields
        elif fields != self.fields:
            raise ValueError(f"record fields {fields} differ from the dataset's {self.fields}")
        if self._writer is None or self.shards[-1]["num_records"] == self.records_per_shard:
            self._next_shard()
        self._writer.write(encode_record(arrays, meta))
        self.shards[-1]["num_records"] += 1

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        name = f"clips-{len(self.shards):05d}.array_record"
        self._writer = array_record_module.ArrayRecordWriter(
            os.path.join(self.directory, name), "group_size:1"
        )
        self.shards.append({"file": name, "num_records": 0})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        index = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "num_records": sum(s["num_records"] for s in self.shards),
            "shards": self.shards,
            "fields": self.fields or {},
            "meta": self.meta,
        }
        with open(os.path.join(self.directory, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=1)

    def __enter__(self) -> ClipRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_index(directory: str) -> dict[str, Any]:
    """The dataset's ``index.json``, checked: format, version, shard files present, records > 0."""
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(path):
        found = sorted(os.listdir(directory))[:8] if os.path.isdir(directory) else "nothing (no such folder)"
        raise FileNotFoundError(
            f"no {INDEX_FILE} in {directory!r} (found: {found}); write the dataset with ClipRecordWriter"
        )
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {index.get('format')!r} v{index.get('version')} is not {FORMAT!r} v{VERSION}"
        )
    missing = [s["file"] for s in index["shards"] if not os.path.isfile(os.path.join(directory, s["file"]))]
    if missing:
        raise FileNotFoundError(f"{path} lists shards that are missing from {directory!r}: {missing[:5]}")
    if index["num_records"] <= 0:
        raise ValueError(f"{path} lists no records; the dataset in {directory!r} is empty")
    return index


class ClipRecordSource:
    """Grain ``RandomAccessDataSource`` of a clip dataset folder; items are :class:`StoredClip`."""

    def __init__(self, directory: str):
        self.directory = directory
        self.index = read_index(directory)
        import grain  # here, not at the top: writers (the data generators' worker processes) skip jax

        paths = [os.path.join(directory, s["file"]) for s in self.index["shards"]]
        self._records = grain.sources.ArrayRecordDataSource(paths)
        if len(self._records) != self.index["num_records"]:
            raise ValueError(
                f"{directory!r}: the shards hold {len(self._records)} records but {INDEX_FILE} says "
                f"{self.index['num_records']}; rewrite the dataset"
            )

    @property
    def kind(self) -> str:
        return self.index["kind"]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> StoredClip:
        return decode_record(self._records[index])

    def __repr__(self) -> str:
        return f"ClipRecordSource({self.directory!r}, {self.kind}, {len(self)} records)"
