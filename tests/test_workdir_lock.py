"""One trainer per workdir: a live holder is refused by name, a stale lock is taken over, exit releases."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import load_experiment

from vgpt_jax.train import workdir_lock
from vgpt_jax.train.loop import train
from vgpt_jax.train.workdir_lock import LOCK_FILE, WorkdirLock


def _write_lock(workdir, host, pid, age_s=0.0):
    path = workdir / LOCK_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "since": "earlier"}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path, live_pid):
    _write_lock(tmp_path, socket.gethostname(), live_pid)
    with pytest.raises(
        FileExistsError, match=rf"in use by another trainer \(host {socket.gethostname()}, pid {live_pid}"
    ):
        WorkdirLock(str(tmp_path)).__enter__()
    with pytest.raises(FileExistsError, match=f"pid {live_pid}"):
        workdir_lock.check(str(tmp_path))
    # the training loop refuses before it builds anything, and leaves the holder's lock alone
    c = load_experiment("tiny_cpu")
    with pytest.raises(FileExistsError, match=f"pid {live_pid}"):
        train(c, str(tmp_path), iter([]), log=lambda s: None)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == live_pid


def test_a_lock_of_another_host_is_refused_until_it_goes_stale(tmp_path):
    _write_lock(tmp_path, "another-host", 1, age_s=workdir_lock.STALE_AFTER_S - 60)
    with pytest.raises(FileExistsError, match="host another-host, pid 1"):
        WorkdirLock(str(tmp_path)).__enter__()
    _write_lock(tmp_path, "another-host", 1, age_s=workdir_lock.STALE_AFTER_S + 60)
    lines = []
    with WorkdirLock(str(tmp_path), log=lines.append):
        pass
    assert any("taking over the stale lock" in line and "not refreshed for" in line for line in lines), lines


def test_a_stale_lock_is_taken_over_held_and_released(tmp_path, dead_pid):
    _write_lock(tmp_path, socket.gethostname(), dead_pid)
    lines = []
    with WorkdirLock(str(tmp_path), log=lines.append):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(FileExistsError, match=f"pid {os.getpid()}"):  # a second one in this process
            WorkdirLock(str(tmp_path)).__enter__()
    assert lines == [
        f"taking over the stale lock {tmp_path / LOCK_FILE} (host {socket.gethostname()}, pid {dead_pid}, "
        "since earlier): no such process on this host"
    ]
    assert not (tmp_path / LOCK_FILE).exists()
