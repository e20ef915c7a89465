"""Clean-stream features: per-layer hidden states of the tiny model, pooling, and `vgpt features`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from vgpt_jax import config as config_lib
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import (
    DecoderLayer,
    ModelConfig,
    VideoGPT,
    clean_stream_features,
    example_inputs,
)

NUM_LAYERS = 3


def tiny_model_config(scan_layers: bool):
    config = load_experiment("tiny_cpu")
    config.model.num_layers = NUM_LAYERS
    config.model.scan_layers = scan_layers
    return config_lib.validate(config)


@pytest.fixture(scope="module")
def unrolled_params():
    """Initialised parameters of the unrolled 3-layer tiny model, plus noise so that every layer
    changes the stream noticeably."""
    config = tiny_model_config(scan_layers=False)
    model = VideoGPT(ModelConfig.from_config(config))
    boxed = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *example_inputs(config, num_frames=2))
    rng = np.random.default_rng(3)
    return jax.tree.map(
        lambda x: (np.asarray(x) + 0.1 * rng.normal(size=x.shape)).astype(np.float32),
        nn.unbox(boxed["params"]),
    )


def stacked(params):
    """The unrolled parameters in scan_layers' layout: layers_i stacked on a leading axis."""
    backbone = dict(params["backbone"])
    layers = [backbone.pop(f"layers_{i}") for i in range(NUM_LAYERS)]
    backbone["layers"] = jax.tree.map(lambda *a: np.stack(a), *layers)
    return {**params, "backbone": backbone}


def full_model_hidden_states(params, latents):
    """Reference: the whole unrolled model's prefill of the history, every decoder layer's output
    captured by Flax (all layers run, the final norm too). -> (num_layers, B, F·L, D)."""
    config = tiny_model_config(scan_layers=False)
    model = VideoGPT(ModelConfig.from_config(config))
    b, f = latents.shape[:2]
    attrs, positions = layout.history_layout(f, config_lib.sizes(config).tokens_per_frame)
    attrs = jax.tree.map(lambda a: jnp.broadcast_to(a, (b, a.shape[-1])), attrs)
    _, state = model.apply(
        {"params": params},
        latents,
        attrs,
        jnp.broadcast_to(positions, (b, positions.shape[-1])),
        method=VideoGPT.prefill,
        capture_intermediates=lambda module, _: isinstance(module, DecoderLayer),
    )
    captured = state["intermediates"]["backbone"]
    return np.stack([np.asarray(captured[f"layers_{i}"]["__call__"][0][0]) for i in range(NUM_LAYERS)])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_layer_features_equal_the_full_models_hidden_states(unrolled_params, scan_layers):
    latents = np.random.default_rng(4).normal(size=(2, 3, 8, 8, 4)).astype(np.float32)
    want = full_model_hidden_states(unrolled_params, latents)
    b, f, block_len = 2, 3, 16 + 2
    assert want.shape == (NUM_LAYERS, b, f * block_len, 64)
    # the comparison has teeth: each layer moves the stream
    assert np.abs(want[1] - want[0]).max() > 0.1 and np.abs(want[2] - want[1]).max() > 0.1

    cfg = ModelConfig.from_config(tiny_model_config(scan_layers))
    params = stacked(unrolled_params) if scan_layers else unrolled_params
    extract = jax.jit(clean_stream_features, static_argnums=(0, 3))
    got = np.asarray(extract(cfg, params, latents, (3, 1, 2)))
    assert got.shape == (3, b, f, block_len, 64)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_deeper_layers_never_run(unrolled_params, scan_layers):
    """Layers after max(layers) are never read: NaN weights there leave the features finite."""
    latents = np.random.default_rng(5).normal(size=(1, 2, 8, 8, 4)).astype(np.float32)
    want = full_model_hidden_states(unrolled_params, latents)[0]
    params = dict(unrolled_params, backbone=dict(unrolled_params["backbone"]))
    for i in (1, 2):
        params["backbone"][f"layers_{i}"] = jax.tree.map(
            lambda a: np.full_like(a, np.nan), params["backbone"][f"layers_{i}"]
        )
    params = stacked(params) if scan_layers else params
    cfg = ModelConfig.from_config(tiny_model_config(scan_layers))
    got = np.asarray(jax.jit(clean_stream_features, static_argnums=(0, 3))(cfg, params, latents, (1,)))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [(0,), (1, 4), (-1,), ()])
def test_a_layer_outside_the_model_is_an_error_naming_its_depth(unrolled_params, layers):
    cfg = ModelConfig.from_config(tiny_model_config(False))
    latents = np.zeros((1, 2, 8, 8, 4), np.float32)
    with pytest.raises(ValueError, match="the model has 3 layers"):
        clean_stream_features(cfg, unrolled_params, latents, layers)
