"""One process of the multi-host test: trains the tiny config 3 steps on a shared mesh, saves.

Usage: python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT CHECKPOINT_DIR
Prints one JSON line with the losses.
"""

import json
import sys

from vgpt_jax.parallel import distributed

process_id, num_processes, port, ckpt_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id, local_cpu_devices=8 // num_processes)

import numpy as np  # noqa: E402
from conftest import load_experiment  # noqa: E402

from vgpt_jax.checkpoint.manager import Checkpointer  # noqa: E402
from vgpt_jax.parallel.mesh import make_mesh  # noqa: E402
from vgpt_jax.train.step import Trainer  # noqa: E402

config = load_experiment("tiny_cpu")
config.mesh.update(data=2, fsdp=4, tensor=1, sequence=1)
trainer = Trainer(config, make_mesh(config.mesh))
state = trainer.init()
batch = np.random.default_rng(0).normal(size=trainer.batch_shape).astype(np.float32)
sharded = trainer.shard_batch({"target": batch, "clean": batch})
losses = []
for _ in range(3):
    state, metrics = trainer.step(state, sharded)
    losses.append(float(metrics["loss"]))
ckpt = Checkpointer(ckpt_dir)
ckpt.save(3, state, config)
ckpt.wait()
ckpt.close()
print(json.dumps({"process": process_id, "losses": losses}), flush=True)
