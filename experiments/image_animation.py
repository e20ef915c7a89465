"""Image animation: LoRA on the release backbone, the first frame the clean history of the rest (DESIGN §8).

Our design, not a reproduction: the paper's image-to-video recipe is unpublished. A picture
conditions generation as a clean history frame, the path of video history, so training is video
prediction with one fixed partition: every 16-frame clip at 320x240 is ``(1, 15)``, the first frame
one clip and the other 15 one clip denoised against its clean copy (``layout.partition = "fixed"``).
The first clip's own loss is off (``layout.first_clip_loss_weight = 0``): it is the picture,
generated from nothing, which animation never asks for; the 15 frames after it carry the loss.
The rank-8 adapters of the release's targets are trained, everything else stays the converted
weights. Sampling makes the 15 frames in one round after the picture, as trained. Pass the converted
checkpoint and a folder of videos (or latents):

    vgpt train --config experiments/image_animation.py --workdir W \\
        --config.train.init_from=CONVERTED --config.data.source_path=VIDEOS
    vgpt export --checkpoint W --output EXPORT
    vgpt sample --checkpoint EXPORT --image picture.jpg --num-frames 15 --with-context --output out.mp4

``:runlocal`` is the same at tiny_cpu's sizes (8 frames: ``(1, 7)``). Guidance by the history
(``sampling.cfg_scale``) contrasts with the clip generated without the picture, which this fine-tune
never trains (the backbone's pre-training did); ``--cfg-scale 1`` leaves it out. The schedule is a
starting point, not a tuned recipe.
"""

import ml_collections

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    c.lora.update(rank=8, alpha=8.0)  # the release trainer's defaults; targets: qkv and out
    c.data.update(num_frames=16, latent_height=30, latent_width=40)  # 320x240
    # short videos still give 16 frames: the interval is drawn per video from 1..4 as far as it allows
    c.data.update(flexible_interval=True, frame_interval=1, max_interval=4)
    # pre-training's 320k-step warm-up would leave a fine-tune at a near-zero rate
    c.optim.update(warmup_steps=1000, weight_decay=0.0)
    c.train.update(steps=50_000, checkpoint_every=5000)
    return picture_then_clip(with_variant(c, arg))


def picture_then_clip(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``c`` with its N frames laid out as (1, N − 1), sampled the same way: after its variant, which
    may change N."""
    n = c.data.num_frames
    c.layout.update(partition="fixed", fixed_partition=(1, n - 1), first_clip_loss_weight=0.0)
    c.sampling.update(clip_frames=n - 1, window_frames=n)
    return c
