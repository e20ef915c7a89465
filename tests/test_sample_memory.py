"""The compiled memory of the sampling programs (vgpt_jax.tools.sample_memory), read without running them."""

from __future__ import annotations

import pytest

from vgpt_jax import config as config_lib
from vgpt_jax.models.clip_tokenizer import single_device_mesh
from vgpt_jax.sample.sampler import round_sizes
from vgpt_jax.tools.sample_memory import sampling_memory


def test_round_sizes_of_the_rollout():
    # the README's 24 + 40 (a full clip, then 16 after 48 frames) and the paper's 56 + 24
    assert round_sizes(24, 40, clip_frames=24, window_frames=80) == [(24, 24), (48, 16)]
    assert round_sizes(56, 24, clip_frames=24, window_frames=80) == [(56, 24)]
    assert round_sizes(70, 30, clip_frames=24, window_frames=80) == [(56, 24), (74, 6)]


@pytest.mark.slow
def test_temp_memory_of_sampling_is_bounded_in_the_frames():
    """4x the conditioning frames: the tokenizer's temporaries stay those of one chunk of frames,
    and the sampler's grow at most linearly (KV cache, query-chunked scores), not with the square
    of the history as an unchunked attention's would (~16x)."""
    config = config_lib.load_experiment(
        "experiments/tiny_cpu.py", ["sampling.window_frames=256", "tokenizer.chunk_frames=4"]
    )
    mesh = single_device_mesh()
    # 32 history frames are 576 tokens: past one query chunk (512), so both are chunked
    short, long = (sampling_memory(config, frames, 4, mesh) for frames in (32, 128))
    encode_short, clip_short = short[0], short[1]
    encode_long, clip_long = long[0], long[1]
    assert clip_long.name.startswith("sample_clip") and encode_long.name.startswith("encode")
    assert encode_long.temp <= 1.5 * encode_short.temp, (encode_short, encode_long)
    assert clip_long.temp <= 4.5 * clip_short.temp, (clip_short, clip_long)
