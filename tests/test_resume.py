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


def _start(workdir, data_dir) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO / "tests")
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "resume_worker.py"), str(workdir), data_dir, str(STEPS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _batches(workdir) -> dict[int, str]:
    with open(os.path.join(workdir, "batches.txt")) as f:
        return dict(line.split() for line in f)  # a resumed run rewrites steps: the last one wins


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    data_dir = _latent_dataset(tmp_path / "latents")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for w in (whole, killed):
        w.mkdir()

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

    outputs = {}
    for w in (killed, whole):
        proc = _start(w, data_dir)
        outputs[w], err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
    resumed = re.search(r"resumed from \S+ at step (\d+)", outputs[killed])
    assert resumed and int(resumed.group(1)) in (4, 8), outputs[killed][-2000:]

    want, got = read_metrics(str(whole)), read_metrics(str(killed))
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step]["loss"] == want[step]["loss"], step
        assert got[step]["grad_norm"] == want[step]["grad_norm"], step
    assert _batches(killed) == _batches(whole)
