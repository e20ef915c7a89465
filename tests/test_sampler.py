"""The sampler: KV-cached equals uncached; the Euler/CFG loop equals a NumPy float64 loop; rollout windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, perturbed
from flax import traverse_util

from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, example_inputs, inference_params
from vgpt_jax.nn.tokens import TokenAttrs
from vgpt_jax.parallel.mesh import unboxed
from vgpt_jax.sample.sampler import Sampler


@pytest.fixture(scope="module")
def model_and_params():
    config = load_experiment("tiny_cpu")
    model = VideoGPT(ModelConfig.from_config(config))
    params = jax.jit(lambda k: model.init(k, *example_inputs(config, num_frames=2))["params"])(
        jax.random.key(0)
    )
    return config, model, perturbed(params, 0.1)


def _latents(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_cached_sampling_equals_uncached(model_and_params):
    """History K/V computed once per round gives the same clip as recomputing the history every step."""
    config, model, params = model_and_params
    config.sampling.update(steps=6, cfg_scale=1.5)
    history, noise = _latents(1, (2, 5, 8, 8, 4)), _latents(2, (2, 3, 8, 8, 4))
    config.sampling.use_kv_cache = True
    cached = np.asarray(Sampler(config, model).sample_clip(params, history, noise))
    config.sampling.use_kv_cache = False
    uncached = np.asarray(Sampler(config, model).sample_clip(params, history, noise))
    assert np.abs(cached).mean() > 0.1
    np.testing.assert_allclose(cached, uncached, rtol=1e-5, atol=1e-5)


def test_grouped_clip_attention_samples_as_the_reference(model_and_params):
    """With ``block_sparse`` the denoiser's patches take the dense kernel (clip_attention; XLA's on
    a CPU) and the history's prefill the Pallas kernel; the clip equals the ``xla`` backend's."""
    config, model, params = model_and_params
    config.sampling.update(steps=3, cfg_scale=1.5, use_kv_cache=True)
    history, noise = _latents(7, (1, 3, 8, 8, 4)), _latents(8, (1, 2, 8, 8, 4))
    want = np.asarray(Sampler(config, model).sample_clip(params, history, noise))
    backend, config.model.attention.backend = config.model.attention.backend, "block_sparse"
    grouped = VideoGPT(ModelConfig.from_config(config))
    config.model.attention.backend = backend
    got = np.asarray(Sampler(config, grouped).sample_clip(params, history, noise))
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_euler_cfg_loop_matches_numpy(model_and_params):
    """The jitted loop equals spec §9.1 written in NumPy float64 around the model's x1 predictions."""
    config, model, params = model_and_params
    steps, w, shift = 4, 1.5, 2.0
    config.sampling.update(steps=steps, cfg_scale=w, shift=shift, use_kv_cache=True)
    history, noise = _latents(3, (1, 4, 8, 8, 4)), _latents(4, (1, 2, 8, 8, 4))
    got = np.asarray(Sampler(config, model).sample_clip(params, history, noise))

    n, g, s = 4, 2, 16
    hist_attrs, hist_pos = layout.history_layout(n, s)
    cond_attrs, cond_pos = layout.generation_layout(n, g, s)
    free_attrs, free_pos = layout.generation_layout(0, g, s)
    seq_attrs = TokenAttrs(
        *(jnp.concatenate([h, c])[None] for h, c in zip(hist_attrs, cond_attrs, strict=True))
    )
    seq_pos = jnp.concatenate([hist_pos, cond_pos])[None]

    @jax.jit
    def predict(z, t):
        tt = jnp.full((1, g), t, jnp.float32)
        cond = model.apply({"params": params}, history, z, tt, seq_attrs, seq_pos, method=VideoGPT.sequence)
        free = model.apply(
            {"params": params},
            z,
            tt,
            TokenAttrs(*(a[None] for a in free_attrs)),
            free_pos[None],
            None,
            None,
            method=VideoGPT.denoise,
        )
        return cond, free

    def x1(z, t):
        cond, free = predict(jnp.asarray(z, jnp.float32), jnp.float32(t))
        return np.asarray(cond, np.float64), np.asarray(free, np.float64)

    sigma = np.arange(steps + 1, dtype=np.float64) / steps
    sigma = sigma / (sigma + shift - shift * sigma)
    z = np.asarray(noise, np.float64)
    for i in range(steps):
        cond, free = x1(z, sigma[i])
        v_cond, v_free = (cond - z) / (1 - sigma[i]), (free - z) / (1 - sigma[i])
        z = z + (sigma[i + 1] - sigma[i]) * (v_free + w * (v_cond - v_free))
    np.testing.assert_allclose(got, z, rtol=2e-4, atol=2e-4)


def test_rollout_keeps_the_window(model_and_params):
    """Rounds of clip_frames; each sees at most window − g history frames; output = the rounds' clips.

    Every round starts from the same initial noise, as the release re-seeds its generator per round
    (a shorter last round takes the first g frames of it)."""
    config, model, params = model_and_params
    config.sampling.update(steps=2, cfg_scale=1.0, clip_frames=3, window_frames=6, use_kv_cache=True, seed=5)
    sampler = Sampler(config, model)
    context = _latents(6, (1, 5, 8, 8, 4))
    out = np.asarray(sampler.rollout(params, context, 7))
    assert out.shape == (1, 7, 8, 8, 4)

    round_noise = jax.random.normal(jax.random.key(5), (1, 3, 8, 8, 4), jnp.float32)
    frames, clips = context, []
    for g in [3, 3, 1]:
        history = frames[:, -(6 - g) :]
        noise = round_noise[:, :g]
        clip = sampler.sample_clip(params, history, noise)
        clips.append(np.asarray(clip))
        frames = jnp.concatenate([frames, clip], axis=1)
    np.testing.assert_allclose(out, np.concatenate(clips, axis=1), rtol=1e-6, atol=1e-6)


def test_compute_dtype_kernels_sample_the_same_clip(model_and_params):
    """Projection kernels stored in bf16 (as vgpt sample holds them) give the bf16 model's clip bit
    for bit: the layers cast them to bf16 at every use anyway."""
    config, _, params = model_and_params
    config.sampling.update(steps=3, cfg_scale=1.5, use_kv_cache=True)
    config.model.dtype = "bfloat16"
    model = VideoGPT(ModelConfig.from_config(config))
    config.model.dtype = "float32"
    history, noise = _latents(11, (1, 3, 8, 8, 4)), _latents(12, (1, 2, 8, 8, 4))
    params = unboxed(params)
    stored = traverse_util.flatten_dict(inference_params(model.cfg, params), sep="/")
    assert (
        stored["backbone/layers/attention/qkv"].dtype
        == stored["backbone/layers/mlp/down"].dtype
        == jnp.bfloat16
    )
    assert stored["backbone/norm/scale"].dtype == jnp.float32  # everything else as it was
    stored = traverse_util.unflatten_dict(stored, sep="/")
    want = np.asarray(Sampler(config, model).sample_clip(params, history, noise))
    got = np.asarray(Sampler(config, model).sample_clip(stored, history, noise))
    assert np.abs(want).mean() > 0.1
    np.testing.assert_array_equal(got, want)
