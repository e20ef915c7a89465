"""Float8 projections (``model.fp8_projections``): per-tensor e4m3 quantization and the rescaled
product against NumPy float64 with ml_dtypes' e4m3 rounding, the MLP against a NumPy MLP of the same
quantization, the sampler's clip close to the unquantized one, and training refusing it."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from conftest import load_experiment, perturbed
from flax import traverse_util

from vgpt_jax.models.clip_tokenizer import single_device_mesh
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, example_inputs, inference_params
from vgpt_jax.nn.fp8 import projection, scaled_fp8
from vgpt_jax.nn.mlp import GatedMLP
from vgpt_jax.parallel.mesh import unboxed
from vgpt_jax.sample.sampler import Sampler
from vgpt_jax.train.step import Trainer

E4M3_MAX = 448.0  # the largest finite float8_e4m3fn


def ref_quantize(x: np.ndarray) -> np.ndarray:
    """x (float32) -> its per-tensor e4m3 quantization, dequantized to float64: scale = max|x| / 448
    in float32 arithmetic, x / scale rounded to e4m3 by ml_dtypes."""
    scale = np.float32(np.abs(x).max()) / np.float32(E4M3_MAX)
    q = (x / scale).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    return q.astype(np.float64) * np.float64(scale)


def test_scaled_fp8_rounds_to_e4m3_with_the_largest_entry_at_its_max():
    x = np.random.default_rng(0).normal(size=(64, 48)).astype(np.float32) * 3.0
    q, scale = scaled_fp8(jnp.asarray(x))
    assert q.dtype == jnp.float8_e4m3fn
    np.testing.assert_allclose(float(scale), np.abs(x).max() / E4M3_MAX, rtol=1e-6)
    back = np.asarray(q.astype(jnp.float32), np.float64) * float(scale)
    np.testing.assert_array_equal(back, ref_quantize(x))
    assert np.abs(np.asarray(q.astype(jnp.float32))).max() == E4M3_MAX
    # 3 mantissa bits: every normal entry within half a step, 2^-4 of itself
    normal = np.abs(x) / float(scale) >= 2.0**-6
    assert (np.abs(back - x)[normal] <= 2.0**-4 * np.abs(x)[normal] + 1e-12).all()
    zeros, zero_scale = scaled_fp8(jnp.zeros((3, 3)))
    assert float(zero_scale) == 1.0 and not np.asarray(zeros.astype(jnp.float32)).any()


def test_projection_is_the_product_of_the_quantized_operands():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 32)).astype(np.float32)
    kernel = (rng.normal(size=(32, 3, 4, 8)) * 0.1).astype(np.float32)
    got = np.asarray(projection("btd,dshk->sbthk", jnp.asarray(x), jnp.asarray(kernel), jnp.float32, True))
    want = np.einsum("btd,dshk->sbthk", ref_quantize(x), ref_quantize(kernel))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    exact = np.einsum("btd,dshk->sbthk", x.astype(np.float64), kernel.astype(np.float64))
    rel = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 1e-3 < rel < 0.05  # quantized for real, and by e4m3's few percent
    off = np.asarray(projection("btd,dshk->sbthk", jnp.asarray(x), jnp.asarray(kernel), jnp.float32, False))
    np.testing.assert_allclose(off, exact, rtol=1e-4, atol=1e-5)


def test_mlp_in_fp8_equals_a_numpy_mlp_of_quantized_products():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 16)).astype(np.float32)
    mlp = GatedMLP(mlp_dim=24, fp8=True)
    params = mlp.init(jax.random.key(0), jnp.asarray(x))
    params = jax.tree.map(lambda p: p * 20.0, params)  # weights of order 1, products of order 1
    got = np.asarray(mlp.apply(params, jnp.asarray(x)))
    gate_up = np.asarray(params["params"]["gate_up"].value, np.float32)
    down = np.asarray(params["params"]["down"].value, np.float32)
    h = np.einsum("btd,dgf->btgf", ref_quantize(x), ref_quantize(gate_up))
    gate, up = h[:, :, 0], h[:, :, 1]
    h = (up * gate / (1 + np.exp(-gate))).astype(np.float32)
    want = np.einsum("btf,fd->btd", ref_quantize(h), ref_quantize(down))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_fp8_sampler_stays_close_to_the_unquantized_clip():
    config = load_experiment("tiny_cpu")
    config.sampling.update(steps=4, cfg_scale=1.5, use_kv_cache=True)
    model = VideoGPT(ModelConfig.from_config(config))
    params = jax.jit(lambda k: model.init(k, *example_inputs(config, num_frames=2))["params"])(
        jax.random.key(0)
    )
    params = perturbed(params, 0.1)
    history = jax.random.normal(jax.random.key(1), (1, 3, 8, 8, 4))
    noise = jax.random.normal(jax.random.key(2), (1, 2, 8, 8, 4))
    exact = np.asarray(Sampler(config, model).sample_clip(params, history, noise))
    fp8_model = VideoGPT(dataclasses.replace(ModelConfig.from_config(config), fp8_projections=True))
    quantized = np.asarray(Sampler(config, fp8_model).sample_clip(params, history, noise))
    diff = np.abs(quantized - exact)
    assert 0 < diff.mean() < 0.1 * np.abs(exact).mean()


def test_kernels_stored_in_fp8_sample_as_quantized_at_every_use():
    """inference_params' float8 kernels, one scale per layer beside each, give the clip of the
    layers quantizing the fp32 kernels themselves at every use, bit for bit."""
    config = load_experiment("tiny_cpu")
    config.sampling.update(steps=3, cfg_scale=1.5, use_kv_cache=True)
    config.model.fp8_projections = True
    model = VideoGPT(ModelConfig.from_config(config))
    params = jax.jit(lambda k: model.init(k, *example_inputs(config, num_frames=2))["params"])(
        jax.random.key(0)
    )
    params = unboxed(perturbed(params, 0.1))
    stored = traverse_util.flatten_dict(inference_params(model.cfg, params), sep="/")
    qkv, scale = stored["backbone/layers/attention/qkv"], stored["backbone/layers/attention/qkv_fp8_scale"]
    kernel = np.asarray(params["backbone"]["layers"]["attention"]["qkv"])
    assert qkv.dtype == jnp.float8_e4m3fn and scale.shape == (config.model.num_layers,)
    np.testing.assert_allclose(
        np.asarray(scale), np.abs(kernel).reshape(len(kernel), -1).max(1) / E4M3_MAX, rtol=1e-6
    )
    history = jax.random.normal(jax.random.key(1), (1, 3, 8, 8, 4))
    noise = jax.random.normal(jax.random.key(2), (1, 2, 8, 8, 4))
    sampler = Sampler(config, model)
    want = np.asarray(sampler.sample_clip(params, history, noise))
    got = np.asarray(sampler.sample_clip(traverse_util.unflatten_dict(stored, sep="/"), history, noise))
    assert np.abs(want).mean() > 0.1
    np.testing.assert_array_equal(got, want)


def test_training_refuses_fp8_projections():
    config = load_experiment("tiny_cpu")
    config.model.fp8_projections = True
    with pytest.raises(ValueError, match="fp8_projections = True is for sampling"):
        Trainer(config, single_device_mesh())
