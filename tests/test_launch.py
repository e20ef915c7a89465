"""`vgpt train`'s code path end to end on a folder of good and unreadable videos, evaluated on
held-out videos while it trains."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from conftest import load_experiment, write_text_tokenizer

from data_pipelines import video_io
from vgpt_jax.models.clip_tokenizer import ClipTokenizer, TokenizerConfig, abstract_params
from vgpt_jax.train import launch
from vgpt_jax.train.loop import read_metrics
from vgpt_jax.train.step import Trainer


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


def _zero_tokenizer(config, mesh):
    """A tokenizer of config's sizes with zero weights: random init runs its VAE eagerly (~20 s on
    a CPU), and a run's steps need only latents of the right shape."""
    cfg = TokenizerConfig.from_config(config)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract_params(cfg))
    return ClipTokenizer(cfg, zeros, mesh)


def test_a_text_conditioned_run_trains_on_a_manifest(tmp_path, monkeypatch):
    """Two steps on a manifest of captioned videos: the step is compiled for (B, P) int32 text ids
    beside the latents, and the loss (condition dropout and all) is finite."""
    monkeypatch.setattr(launch, "tokenizer_from_weights", _zero_tokenizer)
    compiled_for, compile_step = {}, Trainer.compile

    def spy(self, state, batch):
        compiled_for.update({name: (a.shape, a.dtype) for name, a in batch.items()})
        return compile_step(self, state, batch)

    monkeypatch.setattr(Trainer, "compile", spy)
    frames = np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), np.uint8)
    rows = []
    for i, text in enumerate(["a ball drops", "a ball rolls"]):
        video_io.write_video(str(tmp_path / f"{i}.mp4"), frames[i:], fps=8)
        rows.append({"video": f"{i}.mp4", "text": text})
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    c = load_experiment("tiny_cpu")
    folder = write_text_tokenizer(tmp_path / "release")
    c.condition.update(kind="text", max_text_tokens=4, dropout=0.5, text_tokenizer=str(folder))
    c.data.update(source_path=str(tmp_path / "manifest.jsonl"), num_frames=4, frame_interval=1, min_side=32)
    c.train.update(steps=2, log_every=1, checkpoint_every=2)
    launch.run(c, str(tmp_path / "w"), log=lambda line: None)
    metrics = read_metrics(str(tmp_path / "w"))
    assert all(np.isfinite(metrics[step]["loss"]) for step in (1, 2))
    assert compiled_for["condition"] == ((8, 4), jnp.int32)  # 8 fake devices, one clip each
