"""`vgpt train`'s code path end to end on a folder of good and unreadable videos, evaluated on
held-out videos while it trains."""

import re

import numpy as np
from conftest import load_experiment

from data_pipelines import video_io
from vgpt_jax.train import launch
from vgpt_jax.train.loop import read_metrics


def test_the_run_ends_with_the_total_of_skipped_videos(tmp_path):
    """One good video among two unreadable ones: a step's 8 clips (one per fake device) draw all
    three records of an epoch, each bad one redrawn until readable, so some are skipped."""
    data = tmp_path / "videos"
    data.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), np.uint8)
    video_io.write_video(str(data / "a_good.mp4"), frames, fps=8)
    (data / "b_empty.mp4").write_bytes(b"")
    (data / "c_text.mp4").write_text("not a video")
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    video_io.write_video(str(held_out / "a.mp4"), frames[:6], fps=8)
    c = load_experiment("tiny_cpu")
    c.data.update(source_path=str(data), frame_interval=1, min_side=32)
    c.train.update(steps=2, log_every=1, checkpoint_every=2, peak_tflops=1.0, eval_every=2)
    c.evaluation.update(videos=str(held_out), cond_frames=2, pred_frames=2, fvd=False)
    lines = []
    launch.run(c, str(tmp_path / "w"), log=lines.append)
    # the frame-prediction evaluation: the baseline once at step 0, the model at eval_every steps
    metrics = read_metrics(str(tmp_path / "w"))
    assert set(metrics[0]) == {"eval_baseline/psnr", "eval_baseline/ssim"}
    assert {"eval/psnr", "eval/ssim", "loss"} <= set(metrics[2]) and "eval/psnr" not in metrics[1]
    assert all(np.isfinite(metrics[2][k]) for k in ("eval/psnr", "eval/ssim"))
    (total,) = [line for line in lines if line.startswith("data: ")]
    skipped = re.fullmatch(
        r"data: (\d+) unreadable videos skipped and 0 refused by the rules on this host since "
        r"the run began",
        total,
    )
    assert skipped and int(skipped.group(1)) >= 1, total
