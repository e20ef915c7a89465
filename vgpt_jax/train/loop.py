"""The training loop: data -> jit step -> metrics, with checkpoints, preemption and failure stops.

No host sync happens between log steps: each step reports on the device whether its loss and
updated state are finite, the first step that was not is tracked there too and read at log and
checkpoint steps, so a NaN or an overflow stops the run naming the first bad step, and a
checkpoint is never written from a state that has seen one.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.manager import Checkpointer, abstract_with_shardings
from vgpt_jax.models.video_gpt import num_params
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.flops import matmul_peak, official_partition, train_step_flops
from vgpt_jax.train.resume import restore_newest
from vgpt_jax.train.step import BATCH_FINITE, FINITE, Trainer, TrainState
from vgpt_jax.train.trainable import load_pretrained
from vgpt_jax.train.workdir_lock import WorkdirLock


@jax.jit
def _track_first_bad_step(
    first_bad: dict[str, jax.Array], finite: jax.Array, batch_finite: jax.Array, step: jax.Array
) -> dict[str, jax.Array]:
    """``step``: -1 while every step so far was finite, else the first that was not;
    ``batch_finite``: whether that step's batch was finite."""
    new = (first_bad["step"] < 0) & ~finite
    return {
        "step": jnp.where(new, step, first_bad["step"]),
        "batch_finite": jnp.where(new, batch_finite, first_bad["batch_finite"]),
    }


def _no_bad_step() -> dict[str, jax.Array]:
    return {"step": jnp.array(-1, jnp.int32), "batch_finite": jnp.array(True)}


def _kept_checkpoint(ckpt: Checkpointer) -> str:
    """Where a stopped run can resume from, in words."""
    step = ckpt.latest_step()
    if step is None:
        return "no checkpoint is kept, so a rerun starts from scratch"
    return f"the last checkpoint, step {step}, is kept in {ckpt.directory}"


def _stop_not_finite(bad_step: int, batch_finite: bool, ckpt: Checkpointer) -> FloatingPointError:
    """The error that stops a run at its first non-finite step, after setting aside a checkpoint
    that a resume could not get past.

    A resume replays the steps after its checkpoint exactly (the same batches and randomness), and
    a step's gradient depends only on its parameters, batch and key, not on the learning rate. So
    when the bad step's batch is finite, the checkpoint just before it would fail the same way
    whatever a rerun changes; it is renamed aside (kept, not deleted).
    """
    if not batch_finite:
        cause = f"the batch of step {bad_step} is not finite (check the data)"
    else:
        cause = (
            f"the loss or the updated parameters are not finite at step {bad_step}, from a finite batch "
            "(lower the learning rate)"
        )
        if ckpt.latest_step() == bad_step - 1:
            moved = ckpt.set_aside(bad_step - 1)
            cause += f"; checkpoint {bad_step - 1}, from which a resume would repeat it, was moved to {moved}"
    return FloatingPointError(
        f"not finite at step {bad_step}: {cause}. Stopping; every checkpoint holds a finite state and "
        f"{_kept_checkpoint(ckpt)}"
    )


class Preemption:
    """SIGTERM -> finish the current step, save it (once, also on a checkpoint or the last step),
    return normally (exit 0). Multi-host runs agree on the step through JAX's preemption sync
    point; a single process uses its own signal handler."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """One log line per log step, TensorBoard scalars, and exact values as JSON lines in
    ``workdir/metrics.jsonl`` (process 0 only). A resumed run appends: the last line of a step wins."""

    def __init__(self, workdir: str, log: Callable[[str], None] = print):
        self.log = log
        self.tb = self.jsonl = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(workdir)
            self.jsonl = open(os.path.join(workdir, METRICS_FILE), "a")  # noqa: SIM115 (closed in close())

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self.tb is None:
            return
        self.log(" | ".join([f"step {step}"] + [f"{k} {_fmt(v)}" for k, v in scalars.items()]))
        for k, v in scalars.items():
            self.tb.add_scalar(f"train/{k}", v, step)
        self.tb.flush()
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.jsonl.close()


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
    """``workdir/metrics.jsonl`` as {step: scalars}, the last record of each step."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r.pop("step"): r for r in records}


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _device_memory_gib() -> float:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_in_use", 0) / 2**30


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    batches: Iterator[dict[str, Any]],
    *,
    data_iterator=None,
    mesh=None,
    log: Callable[[str], None] = print,
    prepare: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    on_step: Callable[[int, TrainState], None] | None = None,
) -> TrainState:
    """Trains ``config.train.steps`` steps, resuming from ``workdir/checkpoints`` if present.

    ``batches`` yields host batches (``target``/``clean`` latents, global shape); if it is a
    checkpointable Grain iterator pass it again as ``data_iterator`` so its position is saved
    and restored with the state. ``prepare(batch, step)`` maps a pipeline batch to the step's
    inputs (e.g. pixels -> posterior samples, keyed by the step), ``on_step(step, state)`` runs
    after every step (e.g. writing sample videos). Returns the final state. The workdir is
    locked while training (:class:`~vgpt_jax.train.workdir_lock.WorkdirLock`).
    """
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir, log):
        return _train(config, workdir, batches, data_iterator, mesh, log, prepare, on_step)


def _train(config, workdir, batches, data_iterator, mesh, log, prepare, on_step) -> TrainState:
    t = config.train
    trainer = Trainer(config, make_mesh(config.mesh) if mesh is None else mesh)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t.keep_checkpoints)
    target = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    restored = restore_newest(
        ckpt,
        target,
        config,
        state_sections=Trainer.STATE_SECTIONS,
        optim="optim",
        data_iterator=data_iterator,
        log=log,
    )
    if restored is not None:
        state = restored[1]
        log(f"resumed from {ckpt.directory} at step {int(state.step)}")
    else:
        state = trainer.init()
        if t.init_from:
            target = abstract_with_shardings(trainer.abstract_state.params, trainer.state_shardings.params)
            state = state.replace(params=load_pretrained(t.init_from, state.params, target))
            log(f"initialised the parameters from {t.init_from}")
        elif trainer.trainable.adapters_only:
            log(
                "warning: config.lora.rank > 0 without train.init_from trains adapters on a random, frozen "
                "model (whose zero-initialised output layer gives them no gradient): set train.init_from"
            )
    writer = MetricsWriter(workdir, log)

    partition = official_partition(config.data.num_frames, config.seed)
    step_flops = trainer.global_batch * train_step_flops(config, partition, num_params(state.params))
    # tokens as the comparator counts them: the official sequence of a representative partition
    tokens_per_step = trainer.global_batch * (2 * sum(partition) - partition[-1]) * trainer.sizes.block_len
    on_cpu = jax.default_backend() == "cpu"
    peak = t.peak_tflops or (matmul_peak(1024, dtype=jnp.float32) if on_cpu else matmul_peak())
    peak_total = peak * jax.device_count()

    step = int(state.step)
    first_bad = _no_bad_step()
    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
    fetch = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        with Preemption() as preemption:
            while step < t.steps:
                t_data = time.perf_counter()
                try:
                    batch = fetch.submit(next, batches).result(timeout=t.data_timeout_s)
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(
                        f"the data pipeline produced no batch for {t.data_timeout_s} s at step {step + 1}; "
                        f"{_kept_checkpoint(ckpt)}"
                    ) from None
                data_wait += time.perf_counter() - t_data
                if prepare is not None:
                    batch = prepare(batch, step)
                state, metrics = trainer.step(state, trainer.shard_batch(batch))
                step += 1
                window_steps += 1
                first_bad = _track_first_bad_step(
                    first_bad, metrics.pop(FINITE), metrics.pop(BATCH_FINITE), step
                )
                # a preempted step is saved like a checkpoint step, so never twice
                preempted = preemption.reached(step)
                must_save = step % t.checkpoint_every == 0 or step == t.steps or preempted
                if step % t.log_every == 0 or must_save:
                    bad = jax.device_get(first_bad)
                    if bad["step"] >= 0:
                        raise _stop_not_finite(int(bad["step"]), bool(bad["batch_finite"]), ckpt)
                    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    elapsed = time.perf_counter() - window_start
                    step_s = elapsed / window_steps
                    writer.write(
                        step,
                        {
                            **m,
                            "step_s": step_s,
                            "tokens_per_s": tokens_per_step / step_s,
                            "mfu": step_flops / step_s / 1e12 / peak_total,
                            "data_wait_pct": 100 * data_wait / elapsed,
                            "memory_gib": _device_memory_gib(),
                        },
                    )
                    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
                if must_save:
                    ckpt.save(step, state, config, data_iterator)
                if on_step is not None:
                    hook_start = time.perf_counter()
                    on_step(step, state)
                    window_start += time.perf_counter() - hook_start  # not part of the step time
                if preempted:
                    log(f"preempted: saved step {step} to {ckpt.directory}")
                    break
    finally:
        fetch.shutdown(wait=False, cancel_futures=True)
        ckpt.wait()
        ckpt.close()
        writer.close()
    return state
