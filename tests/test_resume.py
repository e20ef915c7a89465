"""Exact resume: a run killed with SIGKILL and resumed equals an uninterrupted one, bit for bit."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

from data_pipelines.array_record_source import ClipRecordWriter
from vgpt_jax.checkpoint.manager import Checkpointer
from vgpt_jax.train.loop import read_metrics

STEPS = 12


def _latent_dataset(directory) -> str:
    """Twelve 10-frame videos of random posterior moments, as encode_latents writes them."""
    rng = np.random.default_rng(0)
    with ClipRecordWriter(str(directory), kind="latents") as writer:
        for _ in range(12):
            writer.write(
                {
                    "latent_mean": rng.normal(size=(10, 8, 8, 4)).astype(np.float32),
                    "latent_std": rng.uniform(0.01, 0.1, size=(10, 8, 8, 4)).astype(np.float32),
                }
            )
    return str(directory)


def _start(workdir, data_dir, sigterm_steps: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])  # this tree, not an install
    worker = [sys.executable, str(REPO / "tests" / "resume_worker.py"), str(workdir), data_dir, str(STEPS)]
    return subprocess.Popen(
        worker + ([sigterm_steps] if sigterm_steps else []),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _batches(workdir) -> dict[int, str]:
    with open(os.path.join(workdir, "batches.txt")) as f:
        return dict(line.split() for line in f)  # a resumed run rewrites steps: the last one wins


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The latent dataset and the workdir of a run of STEPS steps that nothing interrupted."""
    data_dir = _latent_dataset(tmp_path_factory.mktemp("latents"))
    whole = tmp_path_factory.mktemp("whole")
    proc = _start(whole, data_dir)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    return data_dir, whole


def _saved_steps(workdir) -> list[int]:
    ckpt = Checkpointer(workdir / "checkpoints")
    steps = ckpt.all_steps()
    ckpt.close()
    return steps


def _assert_equal_runs(got_workdir, want_workdir):
    want, got = read_metrics(str(want_workdir)), read_metrics(str(got_workdir))
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step]["loss"] == want[step]["loss"], step
        assert got[step]["grad_norm"] == want[step]["grad_norm"], step
    assert _batches(got_workdir) == _batches(want_workdir)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    data_dir, whole = uninterrupted
    killed = tmp_path / "killed"
    killed.mkdir()

    proc = _start(killed, data_dir)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = os.path.exists(killed / "metrics.jsonl") and max(read_metrics(str(killed)), default=0)
        if done and done >= 6:  # past the step-4 checkpoint
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(read_metrics(str(killed)))
    assert 6 <= killed_at < STEPS

    proc = _start(killed, data_dir)
    output, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    resumed = re.search(r"resumed from \S+ at step (\d+)", output)
    assert resumed and int(resumed.group(1)) in (4, 8), output[-2000:]
    _assert_equal_runs(killed, whole)


@pytest.mark.slow
def test_sigterm_on_checkpoint_ordinary_and_last_steps_saves_once_and_resumes_exactly(
    uninterrupted, tmp_path
):
    """SIGTERM on checkpoint step 4 (its asynchronous save just started), on ordinary step 6 and on
    the last step 12: each run saves that step once, exits 0, and the three runs together equal
    an uninterrupted one."""
    data_dir, whole = uninterrupted
    preempted = tmp_path / "preempted"
    preempted.mkdir()
    for resumed_at, stopped_at, kept in ((None, 4, [4]), (4, 6, [4, 6]), (6, 12, [6, 8, 12])):
        proc = _start(preempted, data_dir, sigterm_steps="4,6,12")
        output, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        assert re.findall(r"preempted: saved step (\d+)", output) == [str(stopped_at)], output[-2000:]
        resumed = re.findall(r"resumed from \S+ at step (\d+)", output)
        assert resumed == ([] if resumed_at is None else [str(resumed_at)]), output[-2000:]
        assert _saved_steps(preempted) == kept
    _assert_equal_runs(preempted, whole)
