"""Model pieces and the whole tiny model against independent float64 NumPy references (spec §3–§6).

Every expected value below is computed here, from the spec's formulas (or by hand), in float64; the
library is never compared with itself. The big test (``test_training_pass_matches_float64_reference``)
rebuilds the OFFICIAL interleaved training sequence ``[N(clip 1)][C(clip 1)]…[N(clip K)]`` with its
position ids and its §5.1 mask, runs the Phi-3 stack and the heads in float64 with the weights in
the official (torch) layout obtained through the mapping table of ``video_gpt.py``, and compares
with ``VideoGPT.__call__``, which uses a different token order (``[clean][noisy]`` with pads).
"""

from __future__ import annotations

import functools
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment
from numpy_reference import (
    CLEAN_K,
    NOISY_K,
    block_tokens,
    official_training_blocks,
    ref_centre_crop,
    ref_conv_patch_embed,
    ref_forward,
    ref_grid_coord,
    ref_inv_freq,
    ref_pos_cells,
    ref_rope,
    ref_rotate_half,
    ref_sincos_1d,
    ref_timestep_features,
    ref_unpatchify,
    ref_visible,
    rel_err,
)
from spec_picture import SPEC_PICTURE_ROWS

from vgpt_jax import config as config_lib
from vgpt_jax.diffusion import flow
from vgpt_jax.models import layout
from vgpt_jax.models import video_gpt as video_gpt_lib
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT
from vgpt_jax.nn import attention as attention_lib
from vgpt_jax.nn.embeddings import (
    PatchEmbed,
    cropped_pos_embed,
    patchify,
    sincos_2d_table,
    timestep_features,
    unpatchify,
)
from vgpt_jax.nn.rope import apply_rope, inverse_frequencies, rope_cos_sin
from vgpt_jax.nn.tokens import NOISY, TokenAttrs

REPO = pathlib.Path(__file__).resolve().parents[1]

# =============================================================================================
# the official (torch) layout of our parameters, for the float64 references of numpy_reference.py
# =============================================================================================


def official_weights(params) -> dict:
    """Our parameter tree -> float64 weights in the official torch layout (video_gpt.py mapping table)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    lay = p["backbone"]["layers"]
    layers = []
    for i in range(lay["input_norm"]["scale"].shape[0]):
        qkv = lay["attention"]["qkv"][i]  # (D, 3, H, Dh)
        d = qkv.shape[0]
        layers.append(
            dict(
                input_layernorm=lay["input_norm"]["scale"][i],
                qkv_proj=qkv.reshape(d, -1).T,  # (3·H·Dh, D), rows Q | K | V
                o_proj=lay["attention"]["out"][i].reshape(-1, d).T,  # (D, H·Dh)
                post_attention_layernorm=lay["post_attention_norm"]["scale"][i],
                gate_up_proj=lay["mlp"]["gate_up"][i].reshape(d, -1).T,  # (2F, D), gate rows first
                down_proj=lay["mlp"]["down"][i].T,  # (D, F)
            )
        )

    def mlp(name):
        return dict(
            w0=p[name]["fc1"]["kernel"].T,
            b0=p[name]["fc1"]["bias"],
            w2=p[name]["fc2"]["kernel"].T,
            b2=p[name]["fc2"]["bias"],
        )

    return dict(
        embed_tokens=p["embed_tokens"]["embedding"],
        layers=layers,
        norm=p["backbone"]["norm"]["scale"],
        x_embedder=(p["x_embedder"]["kernel"].transpose(3, 2, 0, 1), p["x_embedder"]["bias"]),
        input_x_embedder=(
            p["input_x_embedder"]["kernel"].transpose(3, 2, 0, 1),
            p["input_x_embedder"]["bias"],
        ),
        time_token=mlp("time_token"),
        t_embedder=mlp("t_embedder"),
        adaLN=(p["final_layer"]["modulation"]["kernel"].T, p["final_layer"]["modulation"]["bias"]),
        linear=(p["final_layer"]["linear"]["kernel"].T, p["final_layer"]["linear"]["bias"]),
    )


# =============================================================================================
# 1. 2-D sin-cos table and its centre crop (spec §3.3)
# =============================================================================================


@pytest.fixture(scope="module")
def release_table():
    return sincos_2d_table(3072, 192, 64)


def test_sincos_table_release_grid(release_table):
    table = release_table
    assert table.shape == (192, 192, 3072)
    # hand values: cell (row 3, col 6) -> column coordinate 2, row coordinate 1; ω_0 = 1
    cell = table[3, 6]
    np.testing.assert_allclose(
        cell[[0, 768, 1536, 2304]], [math.sin(2.0), math.cos(2.0), math.sin(1.0), math.cos(1.0)], atol=1e-7
    )
    np.testing.assert_allclose(
        table[0, 0], np.r_[np.zeros(768), np.ones(768), np.zeros(768), np.ones(768)], atol=0
    )
    rows = np.array([0, 0, 191, 5, 100, 137, 191, 64])
    cols = np.array([0, 191, 0, 170, 3, 99, 191, 128])
    np.testing.assert_allclose(table[rows, cols], ref_pos_cells(3072, 192, 64, rows, cols), atol=1e-6, rtol=0)
    # the float32 grid coordinates matter at this tolerance: the float64 coordinate 191/3 is off
    exact = ref_sincos_1d(1536, 191 / 3)
    assert np.max(np.abs(exact - ref_sincos_1d(1536, ref_grid_coord(191, 192, 64)))) > 1e-7


def test_cropped_pos_embed_release_11x20(release_table):
    crop = cropped_pos_embed(release_table, 11, 20)
    assert crop.shape == (220, 3072)
    # rows 90…100, cols 86…105, row-major
    np.testing.assert_array_equal(crop[0], release_table[90, 86])
    np.testing.assert_array_equal(crop[19], release_table[90, 105])
    np.testing.assert_array_equal(crop[20], release_table[91, 86])
    np.testing.assert_array_equal(crop[219], release_table[100, 105])
    np.testing.assert_allclose(crop, ref_centre_crop(3072, 192, 64, 11, 20), atol=1e-6, rtol=0)
    # a direct spot check of one cell: token (r=4, c=7) is grid cell (94, 93)
    np.testing.assert_allclose(crop[4 * 20 + 7], ref_pos_cells(3072, 192, 64, 94, 93), atol=1e-6)


@pytest.mark.parametrize("h_tok,w_tok", [(4, 4), (3, 5), (16, 16), (1, 2)])
def test_cropped_pos_embed_tiny_grid(h_tok, w_tok):
    table = sincos_2d_table(64, 16, 8)  # tiny config: coordinates index / 2
    np.testing.assert_allclose(
        cropped_pos_embed(table, h_tok, w_tok), ref_centre_crop(64, 16, 8, h_tok, w_tok), atol=1e-6, rtol=0
    )


# =============================================================================================
# 2. timestep features (spec §3.2)
# =============================================================================================


def test_timestep_features():
    t = np.array([[0.0, 0.02, 0.37], [0.5, 0.999, 1.0]], np.float32)
    got = np.asarray(timestep_features(jnp.asarray(t), 256))
    assert got.shape == (2, 3, 256)
    np.testing.assert_allclose(got, ref_timestep_features(t.astype(np.float64)), atol=1e-6, rtol=0)
    # hand values: t = 0 -> cos = 1, sin = 0; t = 1, k = 0 -> cos 1, sin 1 (cos first)
    np.testing.assert_array_equal(got[0, 0], np.r_[np.ones(128), np.zeros(128)])
    np.testing.assert_allclose(got[1, 2, [0, 128]], [math.cos(1.0), math.sin(1.0)], atol=1e-7)
    f1 = 10000.0 ** (-1 / 128)
    np.testing.assert_allclose(got[1, 2, [1, 129]], [math.cos(f1), math.sin(f1)], atol=1e-6)


# =============================================================================================
# 3. patchify / unpatchify / PatchEmbed (spec §3.2)
# =============================================================================================


def test_patchify_unpatchify_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 10, 4)).astype(np.float32)  # non-square, to catch row/col swaps
    tokens = np.asarray(patchify(jnp.asarray(x), 2))
    assert tokens.shape == (2, 3, 15, 16)
    for b in range(2):
        for f in range(3):
            # patchify is the inverse of the spec's unpatchify: feature (p_row, p_col, c), tokens row-major
            np.testing.assert_array_equal(ref_unpatchify(tokens[b, f], 2, 6, 10), x[b, f])
    y = rng.normal(size=(2, 3, 15, 16)).astype(np.float32)
    got = np.asarray(unpatchify(jnp.asarray(y), 2, 6, 10))
    assert got.shape == (2, 3, 6, 10, 4)
    for b in range(2):
        for f in range(3):
            np.testing.assert_array_equal(got[b, f], ref_unpatchify(y[b, f], 2, 6, 10))
    np.testing.assert_array_equal(np.asarray(unpatchify(patchify(jnp.asarray(x), 2), 2, 6, 10)), x)


def test_patch_embed_is_torch_conv():
    rng = np.random.default_rng(1)
    d, p, c = 8, 2, 4
    kernel = rng.normal(size=(p, p, c, d)).astype(np.float32)
    bias = rng.normal(size=(d,)).astype(np.float32)
    x = rng.normal(size=(2, 6, 10, c)).astype(np.float32)
    got = np.asarray(PatchEmbed(d, p).apply({"params": {"kernel": kernel, "bias": bias}}, jnp.asarray(x)))
    assert got.shape == (2, 15, d)
    w_torch = kernel.astype(np.float64).transpose(3, 2, 0, 1)  # (D, C, p, p)
    for f in range(2):
        want = ref_conv_patch_embed(x[f].astype(np.float64), w_torch, bias.astype(np.float64), p)
        np.testing.assert_allclose(got[f], want, rtol=1e-5, atol=1e-5)


# =============================================================================================
# 4. RoPE with Phi-3 LongRoPE (spec §3.1)
# =============================================================================================


def test_longrope_magnitude_scale():
    cfg = config_lib.base_config()
    want = math.sqrt(1.0 + math.log(131072 / 4096) / math.log(4096))
    assert config_lib.rope_attention_scaling(cfg) == pytest.approx(want, rel=1e-12)
    assert config_lib.rope_attention_scaling(cfg) == pytest.approx(math.sqrt(17 / 12), rel=1e-12)
    assert config_lib.rope_attention_scaling(cfg) == pytest.approx(1.190238, abs=1e-6)
    cfg.model.rope.factors = "none"
    assert config_lib.rope_attention_scaling(cfg) == 1.0


def test_inverse_frequencies_long_factors():
    factors = config_lib.PHI3_LONG_FACTOR
    assert len(factors) == 48
    got = inverse_frequencies(96, 10000.0, factors)
    assert got.shape == (48,)
    np.testing.assert_allclose(got, ref_inv_freq(96, 10000.0, factors), rtol=1e-6, atol=0)
    assert got[0] == pytest.approx(1 / 1.03, rel=1e-6)
    assert got[47] == pytest.approx(1 / (64.81 * 10000 ** (94 / 96)), rel=1e-5)
    np.testing.assert_allclose(
        inverse_frequencies(16, 10000.0, None), ref_inv_freq(16, 10000.0, None), rtol=1e-6
    )


def test_rope_cos_sin_and_apply_rope_long():
    scaling = config_lib.rope_attention_scaling(config_lib.base_config())
    mscale = math.sqrt(17 / 12)
    inv64 = ref_inv_freq(96, 10000.0, config_lib.PHI3_LONG_FACTOR)
    positions = np.array([0, 5, 222, 10655])
    cos, sin = rope_cos_sin(
        jnp.asarray(positions[None]), inverse_frequencies(96, 10000.0, config_lib.PHI3_LONG_FACTOR), scaling
    )
    cos, sin = np.asarray(cos)[0], np.asarray(sin)[0]
    assert cos.shape == (4, 96)
    phase = positions[:, None].astype(np.float64) * np.concatenate([inv64, inv64])[None]
    # fp32 phases: allow the float32 rounding of position·inv_freq (|phase| up to ~1e4 rad at id 10655)
    tol = mscale * (np.abs(phase) * 6e-7 + 1e-6)
    assert np.all(np.abs(cos - mscale * np.cos(phase)) <= tol)
    assert np.all(np.abs(sin - mscale * np.sin(phase)) <= tol)
    np.testing.assert_allclose(cos[0], mscale, rtol=1e-7)
    np.testing.assert_array_equal(sin[0], 0.0)
    # small ids: tight
    np.testing.assert_allclose(cos[:2], mscale * np.cos(phase[:2]), atol=3e-6, rtol=0)
    np.testing.assert_allclose(sin[:2], mscale * np.sin(phase[:2]), atol=3e-6, rtol=0)

    # rotate-half on explicit ids, fed with the reference's own cos/sin
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 4, 3, 96)).astype(np.float32)
    c32 = (mscale * np.cos(phase)).astype(np.float32)[None]
    s32 = (mscale * np.sin(phase)).astype(np.float32)[None]
    got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(c32), jnp.asarray(s32)))[0]
    want = ref_rope(x[0].astype(np.float64), positions, inv64, mscale)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    want_exact_inputs = x[0] * c32[0][:, None] + ref_rotate_half(x[0].astype(np.float64)) * s32[0][:, None]
    np.testing.assert_allclose(got, want_exact_inputs, atol=2e-6, rtol=0)


# =============================================================================================
# 5. flow matching: loss, time grid, per-clip times, training inputs (spec §6, §9.1)
# =============================================================================================


def test_x1_loss():
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(2, 3, 4, 6, 4)).astype(np.float32)
    target = rng.normal(size=(2, 3, 4, 6, 4)).astype(np.float32)
    per_frame = np.mean((pred.astype(np.float64) - target) ** 2, axis=(2, 3, 4))
    got = float(flow.x1_loss(jnp.asarray(pred), jnp.asarray(target)))
    assert got == pytest.approx(per_frame.mean(), rel=1e-6)
    w = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    got_w = float(flow.x1_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w)))
    assert got_w == pytest.approx((per_frame * w).sum() / w.sum(), rel=1e-6)
    # hand: zero prediction, frames filled with 1, 2, 3 -> per-frame MSE 1, 4, 9
    tgt = np.broadcast_to(np.array([1.0, 2.0, 3.0], np.float32)[None, :, None, None, None], (1, 3, 2, 2, 4))
    zero = jnp.zeros(tgt.shape)
    assert float(flow.x1_loss(zero, jnp.asarray(tgt))) == pytest.approx(14 / 3, rel=1e-6)
    assert float(flow.x1_loss(zero, jnp.asarray(tgt), jnp.array([[1.0, 0.0, 1.0]]))) == pytest.approx(
        5.0, rel=1e-6
    )


def test_time_grid():
    np.testing.assert_allclose(np.asarray(flow.time_grid(50, 1.0)), np.arange(51) / 50, atol=1e-7, rtol=0)
    sigma = np.arange(11) / 10
    want = sigma / (sigma + 3.0 - 3.0 * sigma)
    got = np.asarray(flow.time_grid(10, 3.0))
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)
    assert (
        got[0] == 0.0 and got[-1] == pytest.approx(1.0, abs=1e-7) and got[5] == pytest.approx(0.25, abs=1e-7)
    )


def test_clip_times_constant_within_clips():
    clip_ids = np.stack(
        [layout.clip_ids_from_partition([3, 2, 3]), layout.clip_ids_from_partition([1, 4, 1, 2])]
    )
    t = np.asarray(flow.clip_times(jax.random.key(0), jnp.asarray(clip_ids)))
    assert t.shape == (2, 8) and np.all((t >= 0) & (t < 1))
    for b in range(2):
        for k in np.unique(clip_ids[b]):
            vals = t[b, clip_ids[b] == k]
            assert np.all(vals == vals[0])
        firsts = [t[b, clip_ids[b] == k][0] for k in np.unique(clip_ids[b])]
        assert len(set(firsts)) == len(firsts)


def test_training_inputs_interpolation_and_clean_augmentation():
    b, n, h, w, c = 2, 8, 16, 16, 4
    clip_ids = jnp.asarray(
        np.stack([layout.clip_ids_from_partition([3, 2, 3]), layout.clip_ids_from_partition([8])])
    )
    key = jax.random.key(7, impl="rbg")  # rbg: cheaper to compile on CPU than threefry
    rng = np.random.default_rng(4)
    x1 = rng.normal(size=(b, n, h, w, c)).astype(np.float32)
    zeros, ones = jnp.zeros((b, n, h, w, c)), jnp.ones((b, n, h, w, c))
    training_inputs = jax.jit(flow.training_inputs, static_argnums=4)
    real = training_inputs(key, jnp.asarray(x1), zeros, clip_ids, 0.9)
    at0 = training_inputs(key, zeros, zeros, clip_ids, 0.9)  # same key: same t, ε, s, ε'
    at1 = training_inputs(key, ones, ones, clip_ids, 0.9)
    t = np.asarray(real.t, np.float64)
    assert t.shape == (b, n)
    # x_t = t·x1 + (1 − t)·ε: the t recovered from the two constant targets is the returned t
    t_rec = np.asarray(at1.noisy, np.float64) - np.asarray(at0.noisy, np.float64)
    np.testing.assert_allclose(t_rec, np.broadcast_to(t[..., None, None, None], t_rec.shape), atol=1e-6)
    for row in range(b):
        ids = np.asarray(clip_ids[row])
        for k in np.unique(ids):
            assert np.all(t[row, ids == k] == t[row, ids == k][0])
    tb = t[..., None, None, None]
    residual = np.asarray(real.noisy, np.float64) - tb * x1  # = (1 − t)·ε
    np.testing.assert_allclose(np.asarray(at0.noisy), residual, atol=1e-5)
    keep = t < 0.95  # recover ε where 1 − t is not tiny
    assert keep.sum() >= 4
    eps = residual[keep] / (1 - tb[keep])
    assert abs(eps.mean()) < 0.03 and abs(eps.std() - 1) < 0.03
    # clean: s·x + (1 − s)·ε' with s ~ U(0.9, 1) per frame
    s = np.asarray(at1.clean, np.float64) - np.asarray(at0.clean, np.float64)
    s_frame = s[..., 0, 0, 0]
    np.testing.assert_allclose(s, np.broadcast_to(s_frame[..., None, None, None], s.shape), atol=1e-6)
    assert np.all((s_frame >= 0.9 - 1e-6) & (s_frame <= 1.0 + 1e-6))
    assert len(np.unique(np.round(s_frame, 6))) == b * n  # independent per frame
    eps_c = np.asarray(at0.clean, np.float64) / (1 - s_frame[..., None, None, None])
    assert abs(eps_c.mean()) < 0.03 and abs(eps_c.std() - 1) < 0.03
    assert abs(np.corrcoef(eps_c[keep].ravel(), eps.ravel())[0, 1]) < 0.03  # ε' independent of ε


# =============================================================================================
# 6. parameter count and logical axis names of the release model (spec §3.4)
# =============================================================================================


def release_config():
    if (REPO / "experiments" / "videogpt_stage2.py").exists():
        return load_experiment("videogpt_stage2")
    return config_lib.base_config()


def small_inputs(num_frames: int, hw: int, tokens_per_frame: int, latent_channels: int = 4):
    lat = jnp.zeros((1, num_frames, hw, hw, latent_channels))
    clip_ids = jnp.arange(num_frames, dtype=jnp.int32)[None]
    attrs, positions = layout.training_layout(clip_ids, tokens_per_frame)
    return lat, lat, jnp.zeros((1, num_frames)), attrs, positions


def test_release_parameter_count_and_axis_names(release_table, monkeypatch):
    # the fixed table is a buffer, not a parameter: reuse the one already built instead of a second one
    original = video_gpt_lib.sincos_2d_table
    monkeypatch.setattr(
        video_gpt_lib,
        "sincos_2d_table",
        lambda d, g, b: release_table if (d, g, b) == (3072, 192, 64) else original(d, g, b),
    )
    cfg = release_config()
    model = VideoGPT(ModelConfig.from_config(cfg))
    # parameter shapes do not depend on the sequence: 2 frames of 4x4 latents keep tracing cheap
    boxed = jax.eval_shape(model.init, jax.random.key(0), *small_inputs(2, 4, 4))["params"]
    params = nn.unbox(boxed)

    def count(tree):
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))

    assert count(params) == 3_762_072_592
    assert count(params["backbone"]["layers"]) == 3_624_075_264
    assert count(params["backbone"]["layers"]) // 32 == 113_252_352
    assert count(params["embed_tokens"]) == 98_500_608
    assert count(params["backbone"]["norm"]) == 3_072
    assert count(params["x_embedder"]) + count(params["input_x_embedder"]) == 104_448
    assert count(params["time_token"]) + count(params["t_embedder"]) == 20_459_520
    assert count(params["final_layer"]) == 18_929_680
    assert video_gpt_lib.num_params(params) == 3_762_072_592
    # shapes of the mapping table
    lay = params["backbone"]["layers"]
    assert lay["attention"]["qkv"].shape == (32, 3072, 3, 32, 96)
    assert lay["attention"]["out"].shape == (32, 32, 96, 3072)
    assert lay["mlp"]["gate_up"].shape == (32, 3072, 2, 8192)
    assert lay["mlp"]["down"].shape == (32, 8192, 3072)
    assert params["x_embedder"]["kernel"].shape == (2, 2, 4, 3072)
    assert params["final_layer"]["modulation"]["kernel"].shape == (3072, 6144)
    assert params["final_layer"]["linear"]["kernel"].shape == (3072, 16)
    # every dimension of every parameter carries a logical name that the sharding rules know
    known = {name for name, _ in config_lib.base_config().mesh.logical_axis_rules}
    leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) == len(jax.tree.leaves(params))
    for path, leaf in leaves:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.Partitioned), f"{where} has no logical axis names"
        assert len(leaf.names) == leaf.value.ndim, where
        assert all(isinstance(a, str) and a in known for a in leaf.names), (where, leaf.names)
        if "layers" in where:
            assert leaf.names[0] == "layers", where
    specs = nn.get_partition_spec(boxed)
    for (path, spec), leaf in zip(
        jax.tree_util.tree_leaves_with_path(specs), jax.tree.leaves(params), strict=True
    ):
        assert len(spec) == leaf.ndim and all(isinstance(a, str) for a in spec), jax.tree_util.keystr(path)


# =============================================================================================
# attention backend: chunked queries vs a float64 dense reference (spec §5.1)
# =============================================================================================


@pytest.mark.parametrize("query_chunk", [64, 8, 7])
def test_xla_attention_matches_dense_reference(query_chunk):
    s = 2
    clip_ids = jnp.asarray(
        np.stack([layout.clip_ids_from_partition([1, 2]), layout.clip_ids_from_partition([2, 1])])
    )
    attrs, _ = layout.training_layout(clip_ids, s)  # (2, 24): 24 = 2·3·(S + 2)
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(2, 24, 2, 4)).astype(np.float32) for _ in range(3))
    attend = jax.jit(functools.partial(attention_lib.attend, backend="xla", query_chunk=query_chunk))
    got = np.asarray(attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), attrs, attrs))
    for row in range(2):
        a = jax.tree.map(lambda x, row=row: np.asarray(x[row]), attrs)
        kind = np.where(a.kind == NOISY, NOISY_K, CLEAN_K)
        mask = ref_visible(kind, a.frame, a.clip, a.order, a.is_pad)
        sc = np.einsum("qhd,khd->hqk", q[row].astype(np.float64), k[row]) / 2.0
        sc = np.where(mask[None], sc, -np.inf)
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        want = np.einsum("hqk,khd->qhd", pr, v[row].astype(np.float64))
        real = ~a.is_pad  # pad query rows are never read
        np.testing.assert_allclose(got[row][real], want[real], atol=1e-5, rtol=1e-5)


# =============================================================================================
# 7. the whole tiny training pass vs a float64 forward of the official sequence (§3, §4.2–4.3, §5.1)
# =============================================================================================

LONG_FACTOR_8 = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)


def tiny_config(rope: str):
    cfg = load_experiment("tiny_cpu")
    if rope == "long":
        cfg.model.rope.factors = "long"
        cfg.model.rope.long_factor = LONG_FACTOR_8
        cfg.model.rope.max_position_embeddings = 131072
        cfg.model.rope.original_max_position_embeddings = 4096
    return config_lib.validate(cfg)


def ref_rope_params(rope: str, head_dim: int, theta: float):
    if rope == "long":
        return ref_inv_freq(head_dim, theta, LONG_FACTOR_8), math.sqrt(
            1.0 + math.log(32.0) / math.log(4096.0)
        )
    return ref_inv_freq(head_dim, theta, None), 1.0


@pytest.fixture(scope="module")
def tiny_params():
    """Initialised tiny parameters plus fixed noise (zero-initialised heads must matter): float32 tree."""
    cfg = tiny_config("none")
    model = VideoGPT(ModelConfig.from_config(cfg))
    s = config_lib.sizes(cfg).tokens_per_frame
    # rbg keys: the same init, a third of threefry's compile time on CPU
    key = jax.random.key(0, impl="rbg")
    boxed = jax.jit(model.init)(key, *small_inputs(2, cfg.data.latent_height, s))["params"]
    params = jax.tree.map(np.asarray, nn.unbox(boxed))
    rng = np.random.default_rng(11)
    noisy_params = jax.tree.map(lambda x: (x + 0.15 * rng.normal(size=x.shape)).astype(np.float32), params)
    return params, noisy_params


def test_tiny_init_follows_official_init(tiny_params):
    params, _ = tiny_params
    for name in ("kernel", "bias"):
        assert np.all(params["x_embedder"][name] == 0)  # noisy embedder starts at zero
        for sub in ("modulation", "linear"):
            assert np.all(params["final_layer"][sub][name] == 0)
    assert np.all(params["input_x_embedder"]["bias"] == 0)
    bound = math.sqrt(6.0 / (2 * 2 * 4 + 64))  # xavier-uniform on the (64, 16) weight matrix
    kern = params["input_x_embedder"]["kernel"]
    assert np.max(np.abs(kern)) <= bound and np.std(kern) == pytest.approx(bound / math.sqrt(3), rel=0.15)
    for leaf in (params["backbone"]["layers"]["input_norm"]["scale"], params["backbone"]["norm"]["scale"]):
        assert np.all(leaf == 1)
    stacked = np.concatenate(
        [
            params["backbone"]["layers"]["attention"]["qkv"].ravel(),
            params["time_token"]["fc1"]["kernel"].ravel(),
            params["t_embedder"]["fc2"]["kernel"].ravel(),
            params["embed_tokens"]["embedding"].ravel(),
        ]
    )
    assert np.std(stacked) == pytest.approx(0.02, rel=0.1)


def make_clip_inputs(partitions, seed: int, n: int = 8, hw: int = 8, c: int = 4):
    rng = np.random.default_rng(seed)
    clip_ids = np.stack([layout.clip_ids_from_partition(part) for part in partitions]).astype(np.int32)
    t = np.stack([rng.uniform(size=len(part))[ids] for part, ids in zip(partitions, clip_ids, strict=True)])
    noisy = rng.normal(size=(len(partitions), n, hw, hw, c)).astype(np.float32)
    clean = rng.normal(size=(len(partitions), n, hw, hw, c)).astype(np.float32)
    return clip_ids, t.astype(np.float32), noisy, clean


@pytest.mark.parametrize("rope", ["none", "long"])
def test_training_pass_matches_float64_reference(tiny_params, rope):
    _, params = tiny_params
    cfg = tiny_config(rope)
    mc = ModelConfig.from_config(cfg)
    model = VideoGPT(mc)
    s = config_lib.sizes(cfg).tokens_per_frame
    partitions = [[3, 2, 3], [1, 4, 1, 2]]
    clip_ids, t, noisy, clean = make_clip_inputs(partitions, seed=12)
    attrs, positions = layout.training_layout(jnp.asarray(clip_ids), s)
    got = np.asarray(jax.jit(model.apply)({"params": params}, noisy, clean, t, attrs, positions))
    assert got.shape == noisy.shape

    W = official_weights(params)
    rope_ref = ref_rope_params(rope, mc.head_dim, cfg.model.rope.theta)
    for row, part in enumerate(partitions):
        frames = range(sum(part))
        args = (
            W,
            mc,
            official_training_blocks(part),
            {f: noisy[row, f].astype(np.float64) for f in frames},
            {f: clean[row, f].astype(np.float64) for f in frames},
            {f: float(t[row, f]) for f in frames},
            rope_ref,
        )
        ref = ref_forward(*args)
        want = np.stack([ref[f] for f in frames])
        assert np.std(want) > 0.1
        assert rel_err(got[row], want) < 1e-4, (row, rel_err(got[row], want))
        if row == 0 and rope == "none":  # the comparison has teeth: small rule changes move the output
            for variant in ("see_own_clean", "clean_pos_as_noisy"):
                wrong = ref_forward(*args, variant=variant)
                assert rel_err(got[row], np.stack([wrong[f] for f in frames])) > 1e-2, variant


# =============================================================================================
# 8. KV-cached sampling halves vs the uncached sequence (spec §4.4, §5.3, §9)
# =============================================================================================


def test_prefill_denoise_match_uncached_sequence_and_reference(tiny_params):
    _, params = tiny_params
    cfg = tiny_config("long")
    mc = ModelConfig.from_config(cfg)
    model = VideoGPT(mc)
    variables = {"params": params}
    s = config_lib.sizes(cfg).tokens_per_frame
    n, g = 3, 2
    rng = np.random.default_rng(13)
    clean = rng.normal(size=(1, n, 8, 8, 4)).astype(np.float32)
    noisy = rng.normal(size=(1, g, 8, 8, 4)).astype(np.float32)
    t = np.full((1, g), 0.37, np.float32)

    hist_attrs, hist_pos = layout.history_layout(n, s)
    cond_attrs, cond_pos = layout.generation_layout(n, g, s)
    free_attrs, free_pos = layout.generation_layout(0, g, s)

    def rows(tree):  # add a batch axis of 1
        return jax.tree.map(lambda x: x[None], tree)

    prefill = jax.jit(functools.partial(model.apply, method=VideoGPT.prefill))
    denoise = jax.jit(functools.partial(model.apply, method=VideoGPT.denoise))
    sequence = jax.jit(functools.partial(model.apply, method=VideoGPT.sequence))

    prefix = prefill(variables, clean, rows(hist_attrs), rows(hist_pos))
    assert prefix.k.shape == (mc.num_layers, 1, n * (s + 2), mc.num_heads, mc.head_dim)
    cached = np.asarray(
        denoise(variables, noisy, t, rows(cond_attrs), rows(cond_pos), prefix, rows(hist_attrs))
    )
    seq_attrs = TokenAttrs(*(jnp.concatenate([a, b]) for a, b in zip(hist_attrs, cond_attrs, strict=True)))
    uncached = np.asarray(
        sequence(variables, clean, noisy, t, rows(seq_attrs), rows(jnp.concatenate([hist_pos, cond_pos])))
    )
    assert uncached.shape == (1, g, 8, 8, 4)
    assert rel_err(cached, uncached) < 1e-5

    # the history-free (CFG) row: a prefix that is all pad is the same as no prefix
    pad_attrs = rows(hist_attrs._replace(is_pad=jnp.ones_like(hist_attrs.is_pad)))
    free_pad = np.asarray(denoise(variables, noisy, t, rows(free_attrs), rows(free_pos), prefix, pad_attrs))
    free_none = np.asarray(denoise(variables, noisy, t, rows(free_attrs), rows(free_pos), None, None))
    assert rel_err(free_pad, free_none) < 1e-6
    assert rel_err(free_none, cached) > 1e-2  # the history does matter to the conditional row

    # both rows in one batch against a batch-1 prefix, as the sampler calls it
    both_attrs = TokenAttrs(*(jnp.stack([a, b]) for a, b in zip(cond_attrs, free_attrs, strict=True)))
    prefix_attrs2 = TokenAttrs(
        *(jnp.concatenate([a, b]) for a, b in zip(rows(hist_attrs), pad_attrs, strict=True))
    )
    both = np.asarray(
        denoise(
            variables,
            np.concatenate([noisy, noisy]),
            np.concatenate([t, t]),
            both_attrs,
            jnp.stack([cond_pos, free_pos]),
            prefix,
            prefix_attrs2,
        )
    )
    assert rel_err(both[0], uncached[0]) < 1e-5
    assert rel_err(both[1], free_none[0]) < 1e-5

    # and both against the float64 forward of the official inference sequences (spec §4.4)
    W = official_weights(params)
    rope_ref = ref_rope_params("long", mc.head_dim, cfg.model.rope.theta)
    hist = {f: clean[0, f].astype(np.float64) for f in range(n)}
    cond_blocks = [(CLEAN_K, f, 0) for f in range(n)] + [(NOISY_K, f, 1) for f in range(n, n + g)]
    ref = ref_forward(
        W,
        mc,
        cond_blocks,
        {n + i: noisy[0, i].astype(np.float64) for i in range(g)},
        hist,
        {n + i: 0.37 for i in range(g)},
        rope_ref,
    )
    assert rel_err(uncached[0], np.stack([ref[n + i] for i in range(g)])) < 1e-4
    free_blocks = [(NOISY_K, f, 0) for f in range(g)]
    ref_free = ref_forward(
        W,
        mc,
        free_blocks,
        {i: noisy[0, i].astype(np.float64) for i in range(g)},
        {},
        {i: 0.37 for i in range(g)},
        rope_ref,
    )
    assert rel_err(free_none[0], np.stack([ref_free[i] for i in range(g)])) < 1e-4


# =============================================================================================
# the reference mask itself agrees with the spec's picture (§5.2), so the forward test is sound
# =============================================================================================


def test_reference_mask_reproduces_spec_picture_and_library_official_order():
    blocks = official_training_blocks([2, 1, 2])
    kind, frame, clip, order, pos = block_tokens(blocks, 2)
    symbols = {
        (NOISY_K, 0): "d",
        (NOISY_K, 1): "t",
        (NOISY_K, 2): "N",
        (CLEAN_K, 0): "<",
        (CLEAN_K, 1): "C",
        (CLEAN_K, 2): ">",
    }
    assert (
        "".join(symbols[(kd, o)] for kd, o in zip(kind, order, strict=True))
        == "dtNNdtNN<CC><CC>dtNN<CC>dtNNdtNN"
    )
    mask = ref_visible(kind, frame, clip, order)
    for q, pattern in SPEC_PICTURE_ROWS.items():
        assert "".join("#" if v else "." for v in mask[q]) == pattern, q
    # positions §4.3: frame f owns f·L … f·L+L−1, shared by both copies
    assert list(pos[:8]) == [0, 1, 2, 3, 4, 5, 6, 7] and list(pos[8:16]) == [0, 1, 2, 3, 4, 5, 6, 7]
    lib_mask, lib_pos = layout.official_order_mask([2, 1, 2], 2)
    np.testing.assert_array_equal(lib_mask, mask)
    np.testing.assert_array_equal(lib_pos, pos)


@pytest.mark.parametrize("backend", ["block_sparse", "splash"])
def test_tiny_model_pallas_backends_match_xla(backend):
    """The backend switch: the tiny model's training pass through a Pallas backend (interpreted on
    the CPU, inside the layer scan) equals the same parameters through ``xla``."""
    config = load_experiment("tiny_cpu")
    noisy, clean, t, _, positions = video_gpt_lib.example_inputs(config, batch=2)
    rng = np.random.default_rng(0)
    noisy = jnp.asarray(rng.normal(size=noisy.shape), jnp.float32)
    clean = jnp.asarray(rng.normal(size=clean.shape), jnp.float32)
    t = jnp.asarray(rng.uniform(size=t.shape), jnp.float32)
    keys = jax.random.split(jax.random.key(3), 2)
    clip_ids = jax.vmap(layout.random_clip_ids, in_axes=(0, None))(keys, config.data.num_frames)
    attrs, _ = layout.training_layout(clip_ids, config_lib.sizes(config).tokens_per_frame)
    outputs = {}
    for name in ("xla", backend):
        config.model.attention.backend = name
        model = VideoGPT(ModelConfig.from_config(config))
        if name == "xla":
            params = model.init(jax.random.key(0), noisy, clean, t, attrs, positions)["params"]
        # (B, N, h, w, C) x1 of every frame; pad tokens' outputs (void under block_sparse) reach no
        # real token, so this is exact
        outputs[name] = np.asarray(model.apply({"params": params}, noisy, clean, t, attrs, positions))
    np.testing.assert_allclose(outputs[backend], outputs["xla"], rtol=1e-4, atol=1e-5)
