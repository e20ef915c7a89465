"""Text-to-video: LoRA on the release backbone with a text prefix (DESIGN §8).

Our design, not a reproduction: the release has no condition path and the paper publishes no
text fine-tuning recipe. A caption's Phi-3 token ids (the release folder's ``tokenizer.json``, up
to 64 tokens, pads masked) come before 16 frames at the release's 320x176, through the model's own
token table; the rank-8 adapters of the release's targets are trained, everything else (the token
table included) stays the converted weights. The data is a JSONL manifest of
``{"video": PATH, "text": STR}`` rows (``data_pipelines/labelled_source.py``); every row needs a
text of at most 64 tokens, which training checks before it compiles. Pass the converted
checkpoint, the release folder and the manifest:

    vgpt train --config experiments/text_to_video.py --workdir W \\
        --config.train.init_from=CONVERTED \\
        --config.condition.text_tokenizer=RELEASE \\
        --config.data.source_path=captions.jsonl

``:runlocal`` is the tiny CPU model with the release's 32,064 token rows, so the release tokenizer's
ids fit it. The schedule is a starting point, not a tuned recipe.
"""

from vgpt_jax.config import base_config, with_variant


def get_config(arg: str = ""):
    """``arg``: '' for the experiment, ``runlocal`` for its CPU-sized variant."""
    c = base_config()
    # text_tokenizer: the release folder (vgpt convert does not copy its tokenizer files)
    c.condition.update(kind="text", max_text_tokens=64, text_tokenizer="")
    c.lora.update(rank=8, alpha=8.0)  # the release trainer's defaults; targets: qkv and out
    c.data.num_frames = 16  # at base_config's 320x176 bucket
    # captioned clips are often a few seconds long: the per-video interval is drawn from 1..4 as
    # far as each video allows, so short ones still give 16 frames
    c.data.update(flexible_interval=True, frame_interval=1, max_interval=4)
    # pre-training's 320k-step warm-up would leave a fine-tune at a near-zero rate
    c.optim.update(warmup_steps=1000, weight_decay=0.0)
    c.train.update(steps=50_000, checkpoint_every=5000)
    return with_variant(c, arg)
