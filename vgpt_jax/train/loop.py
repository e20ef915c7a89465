"""The training loop of every model: data -> compiled step -> metrics, with checkpoints, preemption
and failure stops. Video-GPT (:func:`train`) and the clip tokenizer (``train/tokenizer.py``) both
run through :func:`train_with`, which is :func:`setup` (state, restore, FLOP accounting) then
:func:`run_loop`.

No host sync happens between log steps: each step reports on the device whether its loss and
updated state are finite, the first step that was not is tracked there too and read at log and
checkpoint steps, so a NaN or an overflow stops the run naming the first bad step, and a
checkpoint is never written from a state that has seen one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections

from vgpt_jax.checkpoint.manager import Checkpointer, abstract_with_shardings
from vgpt_jax.device_stats import device_memory_gib
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.flops import matmul_peak
from vgpt_jax.train.resume import restore_newest
from vgpt_jax.train.step import BATCH_FINITE, FINITE, Trainer, TrainState
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
    ``workdir/metrics.jsonl`` (process 0 only). A resumed run appends (see :func:`read_metrics`)."""

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
            # "eval/psnr" keeps its own section; the step's own metrics go under "train/"
            self.tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
        self.tb.flush()
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.jsonl.close()


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
    """``workdir/metrics.jsonl`` as {step: scalars}: a step's records merged, the last value of a
    name winning (a resumed run repeats steps; an evaluation adds its own record to a step)."""
    merged: dict[int, dict[str, float]] = {}
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                merged.setdefault(record.pop("step"), {}).update(record)
    return merged


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def planned_memory_bytes(compiled) -> int | None:
    """A compiled program's memory per device as XLA planned it: arguments + outputs - donated +
    temporaries (None where the backend plans none ahead)."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


def describe_memory(compiled) -> str:
    """The compiled step's memory per device, as XLA planned it (MaxText prints the same)."""
    total = planned_memory_bytes(compiled)
    if total is None:
        return "the compiled step's memory analysis is not available on this backend"
    m = compiled.memory_analysis()

    def gib(n: int) -> str:
        return f"{n / 2**30:.3f} GiB"

    return (
        f"compiled step memory per device: {gib(total)} = arguments {gib(m.argument_size_in_bytes)} + "
        f"outputs {gib(m.output_size_in_bytes)} - donated {gib(m.alias_size_in_bytes)} + "
        f"temporaries {gib(m.temp_size_in_bytes)}; code {gib(m.generated_code_size_in_bytes)}"
    )


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """What the loop reads of a config, from the training section of the model it trains."""

    steps: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    data_timeout_s: float
    peak_tflops: float  # per device; 0 = measure a matmul at start
    profile_start: int  # the first step of the profiler trace
    profile_steps: int  # steps traced into workdir/profile (0: none)

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, section: ml_collections.ConfigDict
    ) -> LoopSettings:
        """``section``: ``config.train`` or ``config.tokenizer.train``; the data timeout and the device
        peak describe the machine and come from ``config.train`` for both."""
        return cls(
            steps=section.steps,
            log_every=section.log_every,
            checkpoint_every=section.checkpoint_every,
            keep_checkpoints=section.keep_checkpoints,
            data_timeout_s=config.train.data_timeout_s,
            peak_tflops=config.train.peak_tflops,
            profile_start=section.profile_start,
            profile_steps=section.profile_steps,
        )


class LoopTrainer(Protocol):
    """What :func:`train_with` needs of a model's trainer (``step.Trainer``, ``tokenizer.TokenizerTrainer``).

    ``step_cost(state, compiled)`` gives the global FLOPs of one step and its work in named units
    (``{"tokens": n}`` -> a ``tokens_per_s`` metric); ``compile(state, batch)`` the step compiled for
    those arguments; the step's metrics carry the :func:`~vgpt_jax.train.step.finiteness` flags.
    """

    config: ml_collections.ConfigDict
    STATE_SECTIONS: tuple[str, ...]  # the config sections whose fields shape the state
    OPTIM_SECTION: str
    abstract_state: Any
    state_shardings: Any

    def initial_state(self, log: Callable[[str], None]) -> TrainState: ...
    def shard_batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]: ...
    def compile(self, state: TrainState, batch: dict[str, jax.Array]) -> Callable: ...
    def step_cost(self, state: TrainState, compiled) -> tuple[float, dict[str, float]]: ...


# A hook after each step: (step, state) -> scalars to log at that step (or None).
StepHook = Callable[[int, TrainState], "dict[str, float] | None"]


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    batches: Iterator[dict[str, Any]],
    *,
    data_iterator=None,
    mesh=None,
    log: Callable[[str], None] = print,
    prepare: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    on_step: StepHook | None = None,
    initial_scalars: dict[str, float] | None = None,
) -> TrainState:
    """Trains Video-GPT for ``config.train.steps`` steps, resuming from ``workdir/checkpoints``.

    ``batches`` yields host batches (``target``/``clean`` latents, global shape); if it is a
    checkpointable Grain iterator pass it again as ``data_iterator`` so its position is saved
    and restored with the state. ``prepare(batch, step)`` maps a pipeline batch to the step's
    inputs (e.g. pixels -> posterior samples, keyed by the step), ``on_step(step, state)`` runs
    after every step (e.g. writing sample videos) and may return scalars to log;
    ``initial_scalars`` are logged at step 0 of a fresh run (e.g. a baseline's evaluation). Returns
    the final state. The workdir is locked while training.
    """
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir, log):
        trainer = Trainer(config, make_mesh(config.mesh) if mesh is None else mesh)
        return _locked_train(
            trainer,
            LoopSettings.from_config(config, config.train),
            workdir,
            batches,
            data_iterator=data_iterator,
            log=log,
            prepare=prepare,
            on_step=on_step,
            initial_scalars=initial_scalars,
        )


def train_with(trainer: LoopTrainer, settings: LoopSettings, workdir: str, batches, **kwargs) -> TrainState:
    """:func:`train` for any :class:`LoopTrainer` (same keyword arguments but ``mesh``)."""
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir, kwargs.get("log", print)):
        return _locked_train(trainer, settings, workdir, batches, **kwargs)


def _locked_train(
    trainer: LoopTrainer,
    settings: LoopSettings,
    workdir: str,
    batches,
    *,
    data_iterator=None,
    log: Callable[[str], None] = print,
    prepare=None,
    on_step: StepHook | None = None,
    initial_scalars: dict[str, float] | None = None,
) -> TrainState:
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=settings.keep_checkpoints)
    writer = MetricsWriter(workdir, log)
    try:
        state = setup(trainer, ckpt, data_iterator, log)
        if int(state.step) == 0 and initial_scalars:
            writer.write(0, initial_scalars)
        return run_loop(
            trainer, settings, state, ckpt, writer, batches, data_iterator, workdir, log, prepare, on_step
        )
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()


def setup(trainer: LoopTrainer, ckpt: Checkpointer, data_iterator, log: Callable[[str], None]) -> TrainState:
    """The state to train from: the newest checkpoint that restores (with the data iterator's
    position), else the trainer's initial state."""
    target = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    restored = restore_newest(
        ckpt,
        target,
        trainer.config,
        state_sections=trainer.STATE_SECTIONS,
        optim=trainer.OPTIM_SECTION,
        data_iterator=data_iterator,
        log=log,
    )
    if restored is not None:
        log(f"resumed from {ckpt.directory} at step {int(restored[1].step)}")
        return restored[1]
    return trainer.initial_state(log)


class _Throughput:
    """Per-log-window rates: step time, work units per second, MFU and the data pipeline's share."""

    def __init__(self, flops_per_step: float, units_per_step: dict[str, float], peak_tflops: float):
        self.flops_per_step, self.units_per_step = flops_per_step, units_per_step
        on_cpu = jax.default_backend() == "cpu"
        peak = peak_tflops or (matmul_peak(1024, dtype=jnp.float32) if on_cpu else matmul_peak())
        self.peak_total = peak * jax.device_count()
        self.restart()

    def restart(self) -> None:
        self.start, self.steps, self.data_wait = time.perf_counter(), 0, 0.0

    def scalars(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        step_s = elapsed / self.steps
        return {
            "step_s": step_s,
            **{f"{unit}_per_s": n / step_s for unit, n in self.units_per_step.items()},
            "mfu": self.flops_per_step / step_s / 1e12 / self.peak_total,
            "data_wait_pct": 100 * self.data_wait / elapsed,
            **device_memory_gib(),
        }


class _Profile:
    """A profiler trace of steps [start, start + count) into ``directory`` (count 0: none)."""

    def __init__(self, directory: str, start: int, count: int, log: Callable[[str], None]):
        self.directory, self.start, self.stop, self.log = directory, start, start + count, log
        self.active = False

    def before(self, step: int) -> None:
        """Called before running ``step`` (1-based)."""
        if self.stop > self.start and step == self.start:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, step: int, state: TrainState) -> None:
        if self.active and step == self.stop - 1:
            jax.block_until_ready(state)
            self.close()
            self.log(f"profiler trace of steps {self.start}-{step} written to {self.directory}")

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


def run_loop(
    trainer: LoopTrainer,
    settings: LoopSettings,
    state: TrainState,
    ckpt: Checkpointer,
    writer: MetricsWriter,
    batches,
    data_iterator,
    workdir: str,
    log: Callable[[str], None],
    prepare=None,
    on_step: StepHook | None = None,
) -> TrainState:
    """Steps from ``state.step`` to ``settings.steps``: see the module docstring and :func:`train`.

    The step is compiled for the first batch, its memory plan printed, and that program runs every
    step (one compilation, whatever the jit cache would do with a changed argument).
    """
    s = settings
    step = int(state.step)
    first_bad = _no_bad_step()
    compiled = throughput = None
    profile = _Profile(os.path.join(workdir, "profile"), s.profile_start, s.profile_steps, log)
    fetch = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        with Preemption() as preemption:
            while step < s.steps:
                t_data = time.perf_counter()
                try:
                    batch = fetch.submit(next, batches).result(timeout=s.data_timeout_s)
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(
                        f"the data pipeline produced no batch for {s.data_timeout_s} s at step {step + 1}; "
                        f"{_kept_checkpoint(ckpt)}"
                    ) from None
                # only the wait for the host pipeline: what follows queues device work, and on a CPU
                # that queueing blocks behind the running step, which is not waiting for data
                waited = time.perf_counter() - t_data
                if prepare is not None:
                    batch = prepare(batch, step)
                batch = trainer.shard_batch(batch)
                if compiled is None:
                    compiled = trainer.compile(state, batch)
                    log(describe_memory(compiled))
                    throughput = _Throughput(*trainer.step_cost(state, compiled), s.peak_tflops)
                else:
                    throughput.data_wait += waited
                profile.before(step + 1)
                state, metrics = compiled(state, batch)
                step += 1
                throughput.steps += 1
                profile.after(step, state)
                first_bad = _track_first_bad_step(
                    first_bad, metrics.pop(FINITE), metrics.pop(BATCH_FINITE), step
                )
                # a preempted step is saved like a checkpoint step, so never twice
                preempted = preemption.reached(step)
                must_save = step % s.checkpoint_every == 0 or step == s.steps or preempted
                if step % s.log_every == 0 or must_save:
                    bad = jax.device_get(first_bad)
                    if bad["step"] >= 0:
                        raise _stop_not_finite(int(bad["step"]), bool(bad["batch_finite"]), ckpt)
                    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    writer.write(step, {**m, **throughput.scalars()})
                    throughput.restart()
                if must_save:
                    ckpt.save(step, state, trainer.config, data_iterator)
                if on_step is not None:
                    hook_start = time.perf_counter()
                    scalars = on_step(step, state)
                    if scalars:
                        writer.write(step, scalars)
                    throughput.start += time.perf_counter() - hook_start  # not part of the step time
                if preempted:
                    log(f"preempted: saved step {step} to {ckpt.directory}")
                    break
    finally:
        profile.close()
        fetch.shutdown(wait=False, cancel_futures=True)
    return state
