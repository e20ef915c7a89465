"""The training input pipeline: Grain loader per host -> global ``jax.Array`` batches on the mesh.

Static shapes: every clip is brought to **one resolution bucket** per run, the configured latent
size times 8 (see :class:`~data_pipelines.clip_sampler.ClipSpec`). We bucket rather than pad: the
train step compiles one program for one token count, and padding a 16:9 frame (220 tokens) to a
square one (400) would spend 45% of the step on pad tokens. Clips whose ``crop_arr`` size is the
bucket pass unchanged (exactly the official pixels); others are scaled to cover it and
centre-cropped. Runs that want several aspect ratios use one pipeline (and one program) per bucket.

Sharding: host ``p`` of ``P`` reads the ``p``-th contiguous slice of ``len(source) // P`` records
(Grain's ``ShardOptions``; the remainder is dropped), in an order shuffled per epoch, decodes in
``worker_count`` processes with ``worker_buffer_size`` batches prefetched each, and contributes
its rows of the global batch, which is sharded over the mesh axes ('data', 'fsdp') and replicated
over the others. The iterator state is Grain's (plus the skip counters): restoring it gives the
same next batch.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import ml_collections
import numpy as np
from absl import flags, logging
from jax.sharding import Mesh

from data_pipelines import transforms
from data_pipelines.array_record_source import INDEX_FILE, ClipRecordSource
from data_pipelines.clip_sampler import COUNTERS, REJECTED, SKIPPED, ClipSpec, SampleClip
from data_pipelines.video_source import VideoFileSource
from vgpt_jax.parallel.mesh import batch_sharding, data_parallel_size


def open_source(path: str, split: str = "train"):
    """The source for ``path``: a clip-record folder (index.json), a prepared TFDS dataset folder
    (dataset_info.json), a folder of videos, or a ``.txt`` index of videos."""
    if os.path.isfile(os.path.join(path, INDEX_FILE)):
        return ClipRecordSource(path)
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        from data_pipelines.tfds_source import TfdsClipSource  # tensorflow_datasets takes ~1 s to import

        return TfdsClipSource(path, split)
    return VideoFileSource(path)


def batch_sizes(mesh: Mesh, per_device_batch_size: int) -> tuple[int, int]:
    """(global, this host's) batch size: ``per_device_batch_size`` per ('data', 'fsdp') shard.

    The host's share is the number of distinct batch rows its devices hold.
    """
    global_batch = per_device_batch_size * data_parallel_size(mesh)
    index_map = batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch,))
    rows = {idx[0].indices(global_batch)[:2] for idx in index_map.values()}
    return global_batch, sum(stop - start for start, stop in rows)


def make_loader(
    source,
    spec: ClipSpec,
    batch_size: int,
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 4,
    read_prefetch: int = 16,
) -> grain.DataLoader:
    """A Grain loader of this host's batches of ``batch_size`` clips (dict of NumPy arrays).

    ``num_epochs=None`` repeats forever (training); the last partial batch is dropped. Reading the
    source (cheap for video files, one record otherwise) uses ``read_threads`` threads and
    ``read_prefetch`` items of look-ahead; decoding runs in the ``worker_count`` processes.
    """
    if worker_count and not flags.FLAGS.is_parsed():
        # Grain's worker processes read absl flags, which a program without absl.app never parses
        flags.FLAGS.mark_as_parsed()
    shard = grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count, drop_remainder=True)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=shard, shuffle=shuffle, num_epochs=num_epochs, seed=seed
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[SampleClip(source, spec), grain.transforms.Batch(batch_size, drop_remainder=True)],
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
        shard_options=shard,
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_prefetch),
    )


def make_global_batch(
    mesh: Mesh, host_batch: dict[str, np.ndarray], global_batch_size: int
) -> dict[str, jax.Array]:
    """Assembles each host's rows into global arrays sharded over ('data', 'fsdp').

    ``video`` (uint8) becomes float32 RGB in [-1, 1] on the devices (4x less host-to-device traffic
    than converting first); other fields (latents) keep their dtype.
    """
    out = {}
    for name, local in host_batch.items():
        global_shape = (global_batch_size, *local.shape[1:])
        array = jax.make_array_from_process_local_data(batch_sharding(mesh, local.ndim), local, global_shape)
        out[name] = transforms.uint8_to_signed(array) if name == "video" else array
    return out


class GlobalBatchIterator:
    """Iterator of global batches with a checkpointable state and counts of skipped/rejected videos."""

    def __init__(self, loader: grain.DataLoader, mesh: Mesh, global_batch_size: int):
        self.mesh, self.global_batch_size = mesh, global_batch_size
        self._iterator = iter(loader)
        self.counts = {SKIPPED: 0, REJECTED: 0}

    def __iter__(self) -> GlobalBatchIterator:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        host_batch = next(self._iterator)
        skipped = int(np.sum(host_batch[SKIPPED]))
        self.counts[SKIPPED] += skipped
        self.counts[REJECTED] += int(np.sum(host_batch[REJECTED]))
        if skipped:
            logging.log_every_n_seconds(
                logging.WARNING,
                "data: %d unreadable videos skipped so far on this host",
                60,
                self.counts[SKIPPED],
            )
        logging.log_every_n_seconds(
            logging.INFO,
            "data: %d videos rejected by the rules so far on this host",
            600,
            self.counts[REJECTED],
        )
        fields = {k: v for k, v in host_batch.items() if k not in COUNTERS}
        return make_global_batch(self.mesh, fields, self.global_batch_size)

    def get_state(self) -> bytes:
        """Grain's state of this host's iterator plus the counts, as JSON bytes."""
        return json.dumps({"grain": self._iterator.get_state().decode(), "counts": self.counts}).encode()

    def set_state(self, state: bytes) -> None:
        saved = json.loads(state.decode())
        self._iterator.set_state(saved["grain"].encode())
        self.counts = dict(saved["counts"])

    def start_prefetch(self) -> None:
        """Starts decoding in the background (Grain's checkpoint handler calls it after a restore)."""
        self._iterator.start_prefetch()


def make_pipeline(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    source,
    *,
    seed: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    spec: ClipSpec | None = None,
    per_device_batch_size: int | None = None,
) -> GlobalBatchIterator:
    """The training pipeline of a config: sizes from ``config.data`` unless given, sharded by JAX
    process."""
    spec = spec or ClipSpec.from_config(config.data)
    per_device = config.data.per_device_batch_size if per_device_batch_size is None else per_device_batch_size
    global_batch, host_batch = batch_sizes(mesh, per_device)
    loader = make_loader(
        source,
        spec,
        host_batch,
        seed=config.seed if seed is None else seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
    )
    return GlobalBatchIterator(loader, mesh, global_batch)
