"""``make demo``: a synthetic physics world, a tiny clip tokenizer and a tiny Video-GPT on 2 CPU cores.

The model is ``tiny_cpu.py``'s at twice the width, trained on 16-frame clips at the benchmark's
8 fps (frame interval 1), so that what it learns is the motion the Physics-IQ test cases are scored
on. The tokenizer recipe is ``tokenizer_tiny.py``'s. ``demo`` sizes the world and the evaluation;
``evaluation`` is the frame-prediction task on the world's held-out videos.
"""

import os

import ml_collections

from vgpt_jax.config import load_experiment


def get_config():
    c = load_experiment(os.path.join(os.path.dirname(__file__), "tokenizer_tiny.py"))

    # tokenizer_tiny's recipe at half its batch and 700 steps: a quarter of its time, for the demo's
    # 15 minutes (Video-GPT needs the CPU more than the last dB of PSNR)
    c.tokenizer.train.batch_size = 8
    # 8 videos a step, one frame each: the held-out PSNR is limited by gradient noise, and 2 videos
    # of 4 frames each lose ~9 dB (README, "Clip tokenizer"); the demo reads stored frames, so
    # a sample costs no decoding
    c.tokenizer.train.frames_per_sample = 1
    c.tokenizer.train.steps = 700
    c.tokenizer.optim.decay_steps = c.tokenizer.train.steps - c.tokenizer.optim.warmup_steps

    c.data.num_frames = 16
    c.data.frame_interval = 1
    c.data.min_side = 64

    # twice tiny_cpu's width: a token of 2x2 patches of 16 latent channels has 64 values to carry
    c.model.hidden_size = 128
    c.model.mlp_dim = 512

    # 4 sequences a step: what this model learns depends on the sequences it has seen, and a CPU
    # step of 4 costs far less than 4 steps of 1 (README, "Why the demo's recipe")
    c.data.per_device_batch_size = 4
    # the model is always given conditioning frames, so the first clip's frames (no history:
    # generation from nothing) are left out of the loss (README, "Why the demo's recipe")
    c.layout.first_clip_loss_weight = 0.0
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 100
    c.optim.decay_steps = 1400
    # CPU speed only: unrolled layers, and the 576-token sequence's queries in 4 chunks of 144 (no
    # padding; a chunk's scores stay in the CPU's cache, one chunk of all 576 would not: README,
    # "Why the demo's recipe")
    c.model.scan_layers = False
    c.model.attention.query_chunk = 144

    c.train.steps = 1500
    c.train.log_every = 100
    c.train.checkpoint_every = 500
    c.train.peak_tflops = 0.1  # skips the matmul probe: MFU means little on a CPU

    c.sampling.steps = 20
    # No guidance: the paper's 1.5 scores lower on this model (README, "Why the demo's recipe")
    c.sampling.cfg_scale = 1.0
    c.sampling.clip_frames = 4
    c.sampling.window_frames = 16

    # 8 frames before the switch time, 8 after: one training clip's length, so the window never slides
    c.evaluation.cond_frames = 8
    c.evaluation.pred_frames = 8

    demo = c.demo = ml_collections.ConfigDict()
    w = demo.world = ml_collections.ConfigDict()
    w.num_train = 264
    w.num_scenarios = 6  # x 3 views: 18 test cases (and their take 2)
    w.size = 64
    w.seed = 0
    w.train_fps = 8
    w.train_seconds = 8.0
    w.workers = 2
    w.num_eval = 16  # held-out videos for frame prediction (evaluation.num_videos reads as many)
    w.eval_seed = 1  # not the training seed: other scenes
    demo.fps = 8  # the benchmark folder the model is conditioned on and scored at
    demo.cond_frames = 12  # the last conditioning frames the model sees (the window holds 16)
    demo.side_by_side = 3  # test cases written as real | predicted videos
    # FVD of the final frame prediction; off here: I3D at 224x224 costs more than the rest of the
    # evaluation on a CPU (evaluation.fvd is the in-training one's)
    demo.fvd = False
    return c
