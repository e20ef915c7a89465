"""``make demo`` at GPU scale: the same stages on one H200 within 8 minutes, a 313 M Video-GPT.

    vgpt demo --config experiments/physics_gpu.py --workdir W

``demo.py``'s recipe (16-frame clips at 8 fps, the first clip out of the loss, no guidance, the
frame-prediction task of 8 frames before the switch time and 8 after) with:

* the world at 128x128: 512 training videos, 8 benchmark scenarios (24 test cases), 16 held-out
  videos;
* a clip tokenizer 4x as wide as ``tokenizer_tiny.py``'s (widths 32-128), trained in the run;
* Video-GPT at D 1024, 24 layers, 8 heads of 128, MLP 2816 (``videogpt_1b.py``'s Phi-3 shapes at
  half the width): 313 M parameters, bf16, the block-sparse attention (``auto``);
* frame prediction on the held-out videos every 100 steps during training and after it, with FVD.

``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant.
"""

import os

from vgpt_jax.config import load_experiment, with_variant


def get_config(arg: str = ""):
    c = load_experiment(os.path.join(os.path.dirname(__file__), "demo.py"))

    m = c.model
    m.update(hidden_size=1024, num_layers=24, num_heads=8, num_kv_heads=8, mlp_dim=2816)
    # scanned layers: one to compile (the demo unrolls them for CPU speed); attention stays "auto"
    m.update(dtype="bfloat16", remat_policy="none", scan_layers=True)

    # 128 px frames: 16x16 latents, 8x8 tokens of 2x2 patches, 66 a frame with its markers
    c.data.update(latent_height=16, latent_width=16, min_side=128)
    # 2 x 16 frames x 66 tokens = 2112 a sequence, 33,792 a step of 16: ~0.3 s at the ~110k tokens/s
    # a model of this size reaches on an H200 (a third of the 1 B model's FLOPs a token)
    c.data.per_device_batch_size = 16
    c.data.worker_count = 8  # reading and bucketing the tokenizer's samples outruns its step in one process

    # the CPU demo's 2e-3 is for D 128; a rate ~1/D carried to D 1024 (and b2 0.95 for 500 steps)
    c.optim.update(learning_rate=3e-4, b2=0.95, warmup_steps=50, decay_steps=450)
    c.train.update(steps=500, log_every=25, checkpoint_every=250)
    c.train.peak_tflops = 0.0  # measure the matmul peak: MFU means something on a GPU
    c.train.eval_every = 100  # the demo fills evaluation.videos with the world's held-out videos

    t = c.tokenizer
    t.update(block_out_channels=(32, 64, 128, 128), norm_num_groups=8)
    t.optim.update(learning_rate=1e-3, warmup_steps=100, decay_steps=1400)
    t.train.update(steps=1500, batch_size=32, frame_size=128, log_every=100)
    # 8 videos a step, 4 frames each: a sample reads a whole stored video (3 MB at 128 px)
    t.train.frames_per_sample = 4

    w = c.demo.world
    w.update(num_train=512, num_scenarios=8, size=128, workers=16)
    c.demo.fvd = True
    return with_variant(c, arg)
