"""One training process of the exact-resume test: ``vgpt train``'s code path on a latent dataset.

Usage: python resume_worker.py WORKDIR DATA_DIR STEPS [SIGTERM_STEPS]

Besides the run's own outputs it appends ``step sha256`` of every prepared batch to
WORKDIR/batches.txt (flushed per step), so the test can compare the data after a resume.
SIGTERM_STEPS (e.g. ``4,6,12``): the process sends itself SIGTERM while preparing each of these
steps, so the loop sees the preemption right after that step.
"""

import hashlib
import os
import signal
import sys
import time

import jax

jax.config.update("jax_compilation_cache_dir", os.environ.get("VGPT_TEST_CACHE", "/tmp/vgpt_jax_test_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402

from vgpt_jax.train import launch  # noqa: E402

workdir, data_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
sigterm_steps = {int(s) for s in sys.argv[4].split(",")} if len(sys.argv) > 4 else set()


class RecordedInputs(launch.TrainInputs):
    def __call__(self, batch, step):
        time.sleep(0.2)  # slow enough for the test to kill the run between checkpoints
        if step + 1 in sigterm_steps:
            os.kill(os.getpid(), signal.SIGTERM)
        prepared = super().__call__(batch, step)
        digest = hashlib.sha256(np.asarray(prepared["target"]).tobytes()).hexdigest()
        with open(os.path.join(workdir, "batches.txt"), "a") as f:
            f.write(f"{step + 1} {digest}\n")
        return prepared


launch.TrainInputs = RecordedInputs
# not through conftest, which would fake 8 devices
path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "tiny_cpu.py"
spec = importlib.util.spec_from_file_location("tiny_cpu", path)
experiment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(experiment)
config = experiment.get_config()
config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
config.data.update(source_path=data_dir, num_frames=8, frame_interval=1)
config.train.update(steps=steps, log_every=1, checkpoint_every=4, peak_tflops=1.0)
launch.run(config, workdir)
