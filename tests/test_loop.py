"""The training loop: log lines and TensorBoard, checkpoints and resume, NaN and stall stops, SIGTERM."""

import glob
import os
import re
import shutil
import signal
import threading
import time

import jax
import numpy as np
import pytest
from conftest import load_experiment

from vgpt_jax.checkpoint.manager import Checkpointer
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.loop import train


def _config(steps, log_every=2, checkpoint_every=3):
    c = load_experiment("tiny_cpu")
    c.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    c.data.per_device_batch_size = 2
    c.train.update(steps=steps, log_every=log_every, checkpoint_every=checkpoint_every, peak_tflops=1.0)
    return c


def _batches(nan_at=None, stall_at=None, stall_s=0.0):
    rng = np.random.default_rng(0)
    i = 0
    while True:
        i += 1
        x = rng.normal(size=(2, 8, 8, 8, 4)).astype(np.float32)
        if i == nan_at:
            x[0, 0, 0, 0, 0] = np.nan
        if i == stall_at:
            time.sleep(stall_s)
        yield {"target": x, "clean": x}


def _mesh(c):
    return make_mesh(c.mesh, jax.devices()[:1])


def test_logs_checkpoints_and_resumes(tmp_path):
    lines = []
    c = _config(6)
    state = train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lines.append)
    assert int(state.step) == 6
    logged = [line for line in lines if line.startswith("step ")]
    assert [int(line.split()[1]) for line in logged] == [2, 3, 4, 6]  # log steps and checkpoint steps
    for field in ("loss", "grad_norm", "learning_rate", "tokens_per_s", "mfu", "data_wait_pct", "memory_gib"):
        assert f"| {field} " in logged[0]
    assert glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3, 6]

    c.train.steps = 8
    state = train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lines.append)
    assert "resumed from" in " ".join(lines) and int(state.step) == 8


def _slow(batches, seconds):
    for batch in batches:
        time.sleep(seconds)
        yield batch


def _slow_prepare(batch, step):
    time.sleep(0.4)  # stands for device work queued behind the running step (a CPU blocks there)
    return batch


@pytest.mark.parametrize(
    "pipeline_s, prepare, low, high",
    [(0.0, None, 0.0, 30.0), (0.4, None, 60.0, 100.0), (0.0, _slow_prepare, 0.0, 30.0)],
)
def test_data_wait_is_the_time_spent_waiting_for_the_pipeline(tmp_path, pipeline_s, prepare, low, high):
    """A pipeline that takes 0.4 s a batch, against a tiny step of milliseconds, is most of the
    time between logs; an immediate one is little of it, however long the batch's preparation
    for the step takes (that is the step's, not the pipeline's)."""
    lines = []
    c = _config(5, log_every=5, checkpoint_every=100)
    train(c, str(tmp_path), _slow(_batches(), pipeline_s), mesh=_mesh(c), log=lines.append, prepare=prepare)
    (logged,) = [line for line in lines if line.startswith("step 5 ")]
    wait = float(re.search(r"data_wait_pct ([\d.e+-]+)", logged).group(1))
    assert low <= wait <= high, logged


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    c = _config(10, log_every=5)
    with pytest.raises(FloatingPointError, match="not finite at step 4.*step 3"):
        train(c, str(tmp_path), _batches(nan_at=4), mesh=_mesh(c), log=lambda s: None)
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3]


def _all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def test_a_non_finite_update_is_never_saved_and_the_kept_checkpoint_resumes(tmp_path):
    """lr 1e6 overflows the update while the loss (from the weights before it) is still finite: no
    checkpoint holds a non-finite value, the checkpoint just before the bad step (whose gradient
    overflows, at any lr) is moved aside, and a rerun from the kept one at a sane lr trains."""
    from vgpt_jax.checkpoint.manager import abstract_with_shardings
    from vgpt_jax.train.step import Trainer

    c = _config(10, log_every=5, checkpoint_every=1)
    c.optim.learning_rate = 1e6
    with pytest.raises(FloatingPointError, match=r"not finite at step \d+.*from a finite batch") as e:
        train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lambda s: None)
    bad, moved, kept = re.search(
        r"at step (\d+).*checkpoint (\d+), from which .* moved to .*the last checkpoint, step (\d+)",
        str(e.value),
    ).groups()
    bad, moved, kept = int(bad), int(moved), int(kept)
    assert (moved, kept) == (bad - 1, bad - 2)
    assert glob.glob(str(tmp_path / "checkpoints" / f"{moved}.bad-*" / "state"))  # kept aside, not deleted
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == list(range(1, bad - 1))
    trainer = Trainer(c, _mesh(c))
    target = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    for step in ckpt.all_steps():
        assert _all_finite(ckpt.restore(target, step=step)), step
    ckpt.close()

    c.optim.learning_rate = 1e-3
    c.train.steps = bad + 2
    state = train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lambda s: None)
    assert int(state.step) == bad + 2 and _all_finite(state)


def test_a_nan_batch_before_any_checkpoint_says_there_is_none(tmp_path):
    c = _config(10, log_every=5)
    with pytest.raises(FloatingPointError, match="batch of step 1 is not finite.*no checkpoint is kept"):
        train(c, str(tmp_path), _batches(nan_at=1), mesh=_mesh(c), log=lambda s: None)


def _truncate_largest_array_file(step_dir) -> None:
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True) if os.path.isfile(f)]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


def test_resume_sets_damaged_newest_steps_aside_and_falls_back(tmp_path):
    """A truncated array file (step 3) and an empty step folder (step 4): both are reported and
    renamed aside, the run resumes from step 2 and saves 3 and 4 again. When no step restores,
    the error lists each one tried and nothing is moved."""
    c = _config(3, log_every=3, checkpoint_every=1)
    train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lambda s: None)
    checkpoints = tmp_path / "checkpoints"
    _truncate_largest_array_file(checkpoints / "3")
    (checkpoints / "4").mkdir()

    c.train.steps = 4
    lines = []
    state = train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lines.append)
    text = "\n".join(lines)
    for step in (3, 4):
        assert re.search(
            rf"checkpoint step {step} cannot be restored \(.+\); moved to .*/{step}\.bad-", text
        ), text
        (aside,) = glob.glob(str(checkpoints / f"{step}.bad-*"))
    assert f"resumed from {checkpoints} at step 2" in text and int(state.step) == 4
    assert os.listdir(aside) == [] and Checkpointer(checkpoints).all_steps() == [2, 3, 4]

    for step in (2, 3, 4):  # every step damaged
        shutil.rmtree(checkpoints / str(step) / "state")
    with pytest.raises(ValueError, match="no checkpoint .* can be restored") as e:
        train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lambda s: None)
    assert re.search(r"tried step 4: .+; step 3: .+; step 2: .+\. Nothing was moved", str(e.value)), e.value
    assert Checkpointer(checkpoints).all_steps() == [2, 3, 4]


def test_resume_with_a_changed_config_names_the_fields(tmp_path):
    """Fields that change the state's shapes or structure refuse to resume, naming them; others
    (steps, logging, the learning rate) are listed in a warning and the run goes on."""
    c = _config(2, log_every=2, checkpoint_every=2)
    train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lambda s: None)

    bigger = _config(3, log_every=1, checkpoint_every=2)
    bigger.model.update(hidden_size=128, mlp_dim=256)
    bigger.optim.grad_clip_norm = 0.0  # no clipping: one transform less in the optimiser state
    bigger.model.remat_policy = "full"  # changes how the model computes, not its state
    with pytest.raises(ValueError, match="fields that change the train state") as e:
        train(bigger, str(tmp_path), _batches(), mesh=_mesh(bigger), log=lambda s: None)
    refused = "model.hidden_size 64 -> 128, model.mlp_dim 128 -> 256, optim.grad_clip_norm 1.0 -> 0.0."
    assert refused in str(e.value)

    c.train.update(steps=3, log_every=1)
    c.optim.learning_rate = 2e-3
    c.model.remat_policy = "full"
    lines = []
    state = train(c, str(tmp_path), _batches(), mesh=_mesh(c), log=lines.append)
    assert int(state.step) == 3
    assert (
        "warning: resuming step 2 with a config changed from the saved one: model.remat_policy 'none' -> "
        "'full', optim.learning_rate 0.001 -> 0.002, train.log_every 2 -> 1, train.steps 2 -> 3"
    ) in lines


def test_stalled_data_stops_naming_the_step(tmp_path):
    c = _config(10)
    c.train.data_timeout_s = 1.0
    with pytest.raises(TimeoutError, match="no batch for 1.0 s at step 2"):
        train(c, str(tmp_path), _batches(stall_at=2, stall_s=3.0), mesh=_mesh(c), log=lambda s: None)


def test_sigterm_finishes_the_step_saves_and_returns(tmp_path):
    c = _config(1000, log_every=1000, checkpoint_every=1000)
    lines = []

    def batches():
        for i, b in enumerate(_batches()):
            if i == 2:  # the loop is past compilation: ask it to stop
                threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
            yield b

    state = train(c, str(tmp_path), batches(), mesh=_mesh(c), log=lines.append)
    step = int(state.step)
    assert 3 <= step < 1000
    assert any(line.startswith("preempted") for line in lines)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == step


def test_init_from_a_params_checkpoint(tmp_path):
    from vgpt_jax.checkpoint.params import save_params
    from vgpt_jax.train.step import Trainer

    c = _config(1)
    source = Trainer(c, _mesh(c)).init(jax.random.key(7)).params  # differs from the run's seed-0 init
    save_params(tmp_path / "init", {"model": source}, c)
    c.train.init_from = str(tmp_path / "init")
    c.optim.learning_rate = 0.0  # the one step leaves the parameters as loaded
    lines = []
    state = train(c, str(tmp_path / "run"), _batches(), mesh=_mesh(c), log=lines.append)
    assert any("initialised the parameters from" in line for line in lines)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(source), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
