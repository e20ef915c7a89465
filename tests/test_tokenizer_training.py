"""The clip tokenizer trains through the shared loop: checkpoints with the data iterator, an exact
resume, held-out PSNR at an interval, the compiled step's memory plan and a profiler trace."""

import os

import jax
import numpy as np
import pytest
from conftest import load_experiment

from data_pipelines.frames import SourceRange, split_held_out
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.demo.synthetic_physics import write_training_set
from vgpt_jax.train import tokenizer as tt
from vgpt_jax.train.loop import read_metrics


def _config(steps: int):
    config = load_experiment("tokenizer_tiny")
    t = config.tokenizer.train
    # 16 frames a step: 8 samples of 2 frames, one sample per fake device
    t.update(steps=steps, batch_size=16, frames_per_sample=2, frame_interval=1, frame_size=16)
    t.update(log_every=1, checkpoint_every=2, eval_every=2, frames_per_video=4, eval_videos=2)
    t.fit_scaling_factor = False
    config.tokenizer.optim.update(warmup_steps=2, decay_steps=0)  # the schedule does not depend on steps
    return config


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_training_set(str(tmp_path_factory.mktemp("data")), 6, 16, 16, seconds=1.0) + "/videos"


def _params(workdir):
    config = _config(1)
    config.tokenizer.weights = os.path.join(workdir, tt.TOKENIZER_DIR)
    return jax.tree.leaves(tokenizer_from_weights(config).params)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(videos, tmp_path):
    lines = []
    config = _config(4)
    config.tokenizer.train.update(profile_start=3, profile_steps=1)  # a trace changes no result
    whole = tt.train_tokenizer(config, videos, str(tmp_path / "whole"), log=lines.append)
    assert whole["steps"] == 4 and len(whole["losses"]) == 4
    assert any(line.startswith("compiled step memory per device: ") for line in lines), lines
    traces = [
        f for _, _, files in os.walk(tmp_path / "whole" / "profile") for f in files if ".xplane.pb" in f
    ]
    assert traces and any("profiler trace of steps 3-3" in line for line in lines), lines
    metrics = read_metrics(str(tmp_path / "whole"))
    # held-out PSNR every eval_every steps, in the metrics beside the step's own
    assert {s for s, m in metrics.items() if "eval/psnr" in m} == {2, 4}
    assert metrics[4]["eval/psnr"] == pytest.approx(whole["psnr"], abs=1e-4)
    assert {"loss", "grad_norm", "frames_per_s", "mfu", "step_s"} <= set(metrics[3])

    # the same run stopped after step 2 and resumed: the same batches, the same parameters
    tt.train_tokenizer(_config(2), videos, str(tmp_path / "resumed"), log=print)
    lines.clear()
    resumed = tt.train_tokenizer(_config(4), videos, str(tmp_path / "resumed"), log=lines.append)
    assert any("resumed from" in line and "at step 2" in line for line in lines), lines
    assert resumed["psnr"] == whole["psnr"]
    for a, b in zip(_params(tmp_path / "resumed"), _params(tmp_path / "whole"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_held_out_videos_are_the_last_ones_and_never_trained_on(videos):
    from data_pipelines.pipeline import open_source

    source = open_source(videos)
    train, held = split_held_out(source, 2)
    assert [train[i] for i in range(len(train))] == [source[i] for i in range(4)]
    assert [held[i] for i in range(len(held))] == [source[4], source[5]]
    with pytest.raises(ValueError, match="needs more than config.tokenizer.train.eval_videos = 6"):
        split_held_out(source, 6)
    with pytest.raises(IndexError):
        SourceRange(source, 0, 4)[4]


def test_a_batch_that_does_not_split_over_the_devices_names_the_multiple(videos, tmp_path):
    config = _config(2)
    config.tokenizer.train.batch_size = 8  # 4 samples of 2 frames on 8 devices
    with pytest.raises(ValueError, match="use a multiple of 16"):
        tt.train_tokenizer(config, videos, str(tmp_path), log=print)
