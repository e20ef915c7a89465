"""Two processes with 4 CPU devices each, on JAX's distributed runtime over loopback: the same
losses as one process with 8 devices, and their checkpoint restores in one process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, load_experiment

from vgpt_jax.checkpoint.manager import Checkpointer, abstract_with_shardings
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.step import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    port, ckpt_dir = str(_free_port()), str(tmp_path / "ckpt")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO / "tests")
    worker = str(REPO / "tests" / "multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), "2", port, ckpt_dir],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    losses = [json.loads(out.strip().splitlines()[-1])["losses"] for out, _ in outputs]
    assert losses[0] == losses[1]

    config = load_experiment("tiny_cpu")
    config.mesh.update(data=2, fsdp=4, tensor=1, sequence=1)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:8]))
    state = trainer.init()
    batch = np.random.default_rng(0).normal(size=trainer.batch_shape).astype(np.float32)
    sharded = trainer.shard_batch({"target": batch, "clean": batch})
    reference = []
    for _ in range(3):
        state, metrics = trainer.step(state, sharded)
        reference.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses[0], reference, rtol=1e-6)

    # the checkpoint the two processes wrote restores in this single process
    restored = Checkpointer(ckpt_dir).restore(
        abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    )
    assert int(restored.step) == 3
    for got, want in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
