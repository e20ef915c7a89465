"""`vgpt convert` and the parity API on a tiny model in the official release layout (spec §3).

The test writes the official folder itself (Phi-3 config.json, the LVM state dict under the
official names, tokenizer files) with its own float64-drawn weights, then checks what the
converter makes of it against independent references: Hugging Face's ``Phi3Model`` for the
backbone, and the float64 NumPy forward of ``numpy_reference.py`` (fed the official tensors
directly, never our parameters) for the embedders, the head and the whole model.
"""

from __future__ import annotations

import json
import math
import pathlib
import types

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import parity
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
    ref_inv_freq,
    ref_pos_cells,
    ref_timestep_mlp,
    ref_unpatchify,
    ref_visible,
    rel_err,
    silu,
)
from safetensors.numpy import load_file, save_file

from vgpt_jax import cli
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.params import load_config, load_params
from vgpt_jax.convert import official
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import Backbone, VideoGPT
from vgpt_jax.nn.tokens import TokenAttrs

# the tiny model: head dim 16 -> 8 rotary frequencies; every size the LVM class fixes is the release's
D, HEADS, LAYERS, MLP, VOCAB = 64, 4, 2, 96, 40
PAD, DIFFUSION, IMG, END_IMG = 32, 37, 35, 36
LONG_FACTOR = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
SHORT_FACTOR = (1.0, 1.0, 1.0, 1.0, 1.25, 1.25, 1.5, 1.5)
GRID, BASE = 192, 64  # LVM's pos_embed_max_size and base_size
REF_MODEL = types.SimpleNamespace(  # the hyper-parameters ref_forward reads, as written to the folder
    hidden_size=D,
    num_heads=HEADS,
    patch_size=2,
    pos_embed_max_size=GRID,
    pos_embed_base_size=BASE,
    rms_norm_eps=1e-5,
    final_norm_eps=1e-6,
    token_diffusion=DIFFUSION,
    token_image_start=IMG,
    token_image_end=END_IMG,
)
# LongRoPE: long factors and the magnitude sqrt(1 + ln(131072/4096) / ln(4096)) (spec §3.1)
REF_ROPE = (ref_inv_freq(D // HEADS, 10000.0, LONG_FACTOR), math.sqrt(1 + math.log(32) / math.log(4096)))


# =============================================================================================
# the folder, written by the test
# =============================================================================================


def official_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A random LVM state dict under the official names and torch layouts, float32."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def norm(n):
        return (1.0 + w(n, scale=0.1)).astype(np.float32)

    t = {
        "llm.embed_tokens.weight": w(VOCAB, D, scale=1.0),
        "llm.norm.weight": norm(D),
        "final_layer.adaLN_modulation.1.weight": w(2 * D, D, scale=0.1),
        "final_layer.adaLN_modulation.1.bias": w(2 * D, scale=0.1),
        "final_layer.linear.weight": w(16, D, scale=0.2),
        "final_layer.linear.bias": w(16, scale=0.1),
    }
    for name in ("x_embedder", "input_x_embedder"):
        t[f"{name}.proj.weight"] = w(D, 4, 2, 2, scale=0.25)
        t[f"{name}.proj.bias"] = w(D, scale=0.1)
    for name in ("time_token", "t_embedder"):
        t[f"{name}.mlp.0.weight"] = w(D, 256, scale=0.1)
        t[f"{name}.mlp.0.bias"] = w(D, scale=0.1)
        t[f"{name}.mlp.2.weight"] = w(D, D, scale=0.15)
        t[f"{name}.mlp.2.bias"] = w(D, scale=0.1)
    for i in range(LAYERS):
        p = f"llm.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(D)
        t[p + "self_attn.qkv_proj.weight"] = w(3 * D, D, scale=0.15)
        t[p + "self_attn.o_proj.weight"] = w(D, D, scale=0.15)
        t[p + "post_attention_layernorm.weight"] = norm(D)
        t[p + "mlp.gate_up_proj.weight"] = w(2 * MLP, D, scale=0.15)
        t[p + "mlp.down_proj.weight"] = w(D, MLP, scale=0.12)
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)  # the buffer, row-major over the grid (spec §3.3)
    t["pos_embed"] = ref_pos_cells(D, GRID, BASE, rows, cols)[None].astype(np.float32)
    return t


def phi3_config_json() -> dict:
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": D,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "intermediate_size": MLP,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "su", "long_factor": list(LONG_FACTOR), "short_factor": list(SHORT_FACTOR)},
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "bos_token_id": 1,
        "eos_token_id": PAD,
        "pad_token_id": PAD,
        "tie_word_embeddings": False,
    }


def tokenizer_json() -> dict:
    added = {"<|endoftext|>": PAD, "<img>": IMG, "</img>": END_IMG, "<|diffusion|>": DIFFUSION}
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": text, "special": True} for text, i in added.items()],
        "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "img": 3}},
    }


def write_folder(
    path: pathlib.Path, tensors: dict, config: dict | None = None, tokenizer: dict | None = None
):
    path.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": phi3_config_json() if config is None else config,
        "tokenizer.json": tokenizer_json() if tokenizer is None else tokenizer,
        "special_tokens_map.json": {"pad_token": {"content": "<|endoftext|>"}},
    }
    for name, content in files.items():
        (path / name).write_text(json.dumps(content))
    save_file(tensors, str(path / "model.safetensors"))
    return path


def reference_weights(t: dict[str, np.ndarray]) -> dict:
    """The official tensors in the structure ref_forward reads, float64."""
    t = {k: v.astype(np.float64) for k, v in t.items()}

    def mlp(name):
        parts = {"w0": "0.weight", "b0": "0.bias", "w2": "2.weight", "b2": "2.bias"}
        return {k: t[f"{name}.mlp.{part}"] for k, part in parts.items()}

    keys = ("input_layernorm", "post_attention_layernorm", "qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    parent = {"qkv_proj": "self_attn", "o_proj": "self_attn", "gate_up_proj": "mlp", "down_proj": "mlp"}
    layers = [
        {k: t[f"llm.layers.{i}.{parent[k] + '.' if k in parent else ''}{k}.weight"] for k in keys}
        for i in range(LAYERS)
    ]
    return {
        "embed_tokens": t["llm.embed_tokens.weight"],
        "layers": layers,
        "norm": t["llm.norm.weight"],
        "x_embedder": (t["x_embedder.proj.weight"], t["x_embedder.proj.bias"]),
        "input_x_embedder": (t["input_x_embedder.proj.weight"], t["input_x_embedder.proj.bias"]),
        "time_token": mlp("time_token"),
        "t_embedder": mlp("t_embedder"),
        "adaLN": (t["final_layer.adaLN_modulation.1.weight"], t["final_layer.adaLN_modulation.1.bias"]),
        "linear": (t["final_layer.linear.weight"], t["final_layer.linear.bias"]),
    }


@pytest.fixture(scope="module")
def tensors():
    return official_tensors()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tensors):
    return write_folder(tmp_path_factory.mktemp("official"), tensors)


@pytest.fixture(scope="module")
def loaded(folder):
    return official.load(folder, progress=False)


def nchw(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


# =============================================================================================
# config and token ids
# =============================================================================================


def test_load_reads_config_json_and_tokenizer_ids(loaded):
    config, params = loaded
    m = config.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.mlp_dim, m.vocab_size) == (
        D, LAYERS, HEADS, HEADS, MLP, VOCAB,
    )  # fmt: skip
    assert (m.tokens.diffusion, m.tokens.image_start, m.tokens.image_end, m.tokens.pad) == (
        DIFFUSION, IMG, END_IMG, PAD,
    )  # fmt: skip
    assert m.rope.factors == "long" and tuple(m.rope.long_factor) == LONG_FACTOR
    assert config_lib.rope_attention_scaling(config) == pytest.approx(REF_ROPE[1], rel=1e-12)
    assert m.rms_norm_eps == 1e-5 and m.rope.theta == 10000.0
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in leaves)
    assert sum(x.size for x in leaves) == sum(
        v.size for k, v in official_tensors().items() if k != "pos_embed"
    )


# =============================================================================================
# the backbone against Hugging Face Phi3Model with the same weights
# =============================================================================================


def test_backbone_matches_hf_phi3(folder, tensors, loaded):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config, params = loaded
    raw = json.loads((folder / "config.json").read_text())
    # "su" is the old name of "longrope"; transformers 5 renames it only after it has filled in the
    # longrope entries, so it then misses original_max_position_embeddings: give it the new name.
    raw["rope_scaling"]["type"] = "longrope"
    hf_config = transformers.Phi3Config.from_dict(raw)
    hf_config._attn_implementation = "eager"
    hf = transformers.Phi3Model(hf_config).eval()
    state = {k.removeprefix("llm."): torch.from_numpy(v) for k, v in tensors.items() if k.startswith("llm.")}
    hf.load_state_dict(state, strict=True)

    partition, s = [2, 1, 2], 4
    kind, frame, clip, order, pos = block_tokens(official_training_blocks(partition), s)
    mask = ref_visible(kind, frame, clip, order)
    x = np.random.default_rng(1).normal(size=(1, len(pos), D)).astype(np.float32)
    bias = torch.where(torch.from_numpy(mask), 0.0, torch.finfo(torch.float32).min)[None, None]

    def run_hf():
        with torch.no_grad():
            out = hf(
                inputs_embeds=torch.from_numpy(x),
                attention_mask=bias,
                position_ids=torch.from_numpy(pos)[None],
            )
        return out.last_hidden_state.numpy()[0]

    plain = run_hf()
    # Spec §3.1: the official attention always asks LongRoPE for seq_len=5000 > 4096, so it uses the long
    # factors at every length; plain Phi3Model uses the short factors while max(position_ids) < 4096.
    # Patch that choice: the frequencies HF keeps for short sequences become its long-factor ones.
    long_inv_freq, _ = ROPE_INIT_FUNCTIONS["longrope"](hf_config, None, seq_len=4096 + 1)
    hf.rotary_emb.original_inv_freq.copy_(long_inv_freq)
    want = run_hf()

    attrs, positions = layout.training_layout(jnp.asarray(layout.clip_ids_from_partition(partition))[None], s)
    index = layout.official_order_index(partition, s)  # our [clean][noisy] layout, in the official order
    attrs, positions = TokenAttrs(*(a[:, index] for a in attrs)), positions[:, index]
    np.testing.assert_array_equal(np.asarray(positions)[0], pos)
    backbone = Backbone(parity.model_config(config))
    got, _ = jax.jit(backbone.apply)({"params": params["backbone"]}, jnp.asarray(x), positions, attrs)
    got = np.asarray(got)[0]
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    assert rel_err(got, plain) > 1e-3  # the factor choice matters at these positions


# =============================================================================================
# embedders, pos-embed crop, time embedding, final layer, unpatchify: float64 NumPy (spec §3.2–3.3)
# =============================================================================================


def test_embedders_and_head_match_reference(tensors, loaded):
    config, params = loaded
    W = reference_weights(tensors)
    model = VideoGPT(parity.model_config(config))
    variables = {"params": params}
    rng = np.random.default_rng(2)
    h, w, f = 4, 6, 2
    lat = rng.normal(size=(1, f, h, w, 4)).astype(np.float32)
    t = np.array([[0.3, 0.85]], np.float32)
    s = (h // 2) * (w // 2)
    pe = ref_centre_crop(D, GRID, BASE, h // 2, w // 2)

    noisy = np.asarray(model.apply(variables, lat, t, method=VideoGPT.embed_noisy)).reshape(f, s + 2, D)
    clean = np.asarray(model.apply(variables, lat, method=VideoGPT.embed_clean)).reshape(f, s + 2, D)
    emb = W["embed_tokens"]
    for i in range(f):
        x = lat[0, i].astype(np.float64)
        np.testing.assert_allclose(noisy[i, 0], emb[DIFFUSION], rtol=0, atol=0)
        np.testing.assert_allclose(
            noisy[i, 1], ref_timestep_mlp(W["time_token"], t[0, i]), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(noisy[i, 2:], ref_conv_patch_embed(x, *W["x_embedder"], 2) + pe, atol=1e-5)
        np.testing.assert_allclose(clean[i, 0], emb[IMG], rtol=0, atol=0)
        np.testing.assert_allclose(clean[i, -1], emb[END_IMG], rtol=0, atol=0)
        np.testing.assert_allclose(
            clean[i, 1:-1], ref_conv_patch_embed(x, *W["input_x_embedder"], 2) + pe, atol=1e-5
        )

    hidden = rng.normal(size=(1, f * (s + 2), D)).astype(np.float32)
    out = np.asarray(model.apply(variables, hidden, t, h, w, method=VideoGPT.head))
    for i in range(f):
        tok = hidden[0].reshape(f, s + 2, D)[i, 2:].astype(np.float64)  # the patch tokens of noisy block i
        mod = silu(ref_timestep_mlp(W["t_embedder"], t[0, i])) @ W["adaLN"][0].T + W["adaLN"][1]
        ln = (tok - tok.mean(-1, keepdims=True)) / np.sqrt(tok.var(-1, keepdims=True) + 1e-6)
        y = (ln * (1 + mod[D:]) + mod[:D]) @ W["linear"][0].T + W["linear"][1]
        want = ref_unpatchify(y, 2, h, w)
        assert rel_err(out[0, i], want) < 1e-5


# =============================================================================================
# the parity API against the float64 forward of the official sequences (spec §4.2–4.4, §5.1)
# =============================================================================================


def test_predict_x1_matches_reference(tensors, loaded):
    config, params = loaded
    partition = [2, 1, 2]
    n, last = sum(partition), partition[-1]
    rng = np.random.default_rng(3)
    noisy, clean = nchw(rng, n, 4, 8, 8), nchw(rng, n - last, 4, 8, 8)
    t = np.repeat(rng.uniform(size=len(partition)), partition).astype(np.float32)
    got = parity.predict_x1(config, params, partition, noisy, t, clean)
    assert got.shape == (n, 4, 8, 8) and got.dtype == np.float32

    hwc = lambda a: a.astype(np.float64).transpose(1, 2, 0)  # noqa: E731
    ref = ref_forward(
        reference_weights(tensors),
        REF_MODEL,
        official_training_blocks(partition),
        {i: hwc(noisy[i]) for i in range(n)},
        {i: hwc(clean[i]) for i in range(n - last)},
        {i: float(t[i]) for i in range(n)},
        REF_ROPE,
    )
    want = np.stack([ref[i].transpose(2, 0, 1) for i in range(n)])
    assert np.std(want) > 0.1
    assert rel_err(got, want) < 1e-4, rel_err(got, want)


def test_predict_x1_cfg_matches_reference(tensors, loaded):
    config, params = loaded
    n, g, t = 3, 2, 0.37
    rng = np.random.default_rng(4)
    history, noisy = nchw(rng, n, 4, 8, 8), nchw(rng, g, 4, 8, 8)
    cond, uncond = parity.predict_x1_cfg(config, params, history, noisy, t)
    assert cond.shape == uncond.shape == (g, 4, 8, 8)

    W, hwc = reference_weights(tensors), (lambda a: a.astype(np.float64).transpose(1, 2, 0))
    cond_blocks = [(CLEAN_K, f, 0) for f in range(n)] + [(NOISY_K, f, 1) for f in range(n, n + g)]
    ref = ref_forward(
        W,
        REF_MODEL,
        cond_blocks,
        {n + i: hwc(noisy[i]) for i in range(g)},
        {f: hwc(history[f]) for f in range(n)},
        {n + i: t for i in range(g)},
        REF_ROPE,
    )
    want_cond = np.stack([ref[n + i].transpose(2, 0, 1) for i in range(g)])
    free_blocks = [(NOISY_K, f, 0) for f in range(g)]  # the clip alone at frames 0…g−1 (spec §4.4)
    clip = {i: hwc(noisy[i]) for i in range(g)}
    ref = ref_forward(W, REF_MODEL, free_blocks, clip, {}, {i: t for i in range(g)}, REF_ROPE)
    want_free = np.stack([ref[i].transpose(2, 0, 1) for i in range(g)])
    assert rel_err(cond, want_cond) < 1e-4, rel_err(cond, want_cond)
    assert rel_err(uncond, want_free) < 1e-4, rel_err(uncond, want_free)
    assert rel_err(want_cond, want_free) > 1e-2  # the history matters


# =============================================================================================
# round trips, bit for bit
# =============================================================================================


def assert_same_tensors(path_a: pathlib.Path, path_b: pathlib.Path):
    a, b = load_file(str(path_a / "model.safetensors")), load_file(str(path_b / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        if name == "pos_embed":  # recomputed, not copied: equal up to the last bit of its dtype
            np.testing.assert_allclose(
                a[name].astype(np.float32), b[name].astype(np.float32), atol=1e-7, rtol=0
            )
        else:
            np.testing.assert_array_equal(a[name].view(np.uint8), b[name].view(np.uint8), err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_load_save_load_is_bit_exact(tmp_path, tensors, dtype):
    cast = {
        k: v.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32) for k, v in tensors.items()
    }
    source = write_folder(tmp_path / "source", cast)
    config, params = official.load(source, progress=False)  # fp32 parameters either way
    official.save(tmp_path / "written", config, params, dtype=dtype, progress=False)
    assert_same_tensors(source, tmp_path / "written")
    config2, params2 = official.load(tmp_path / "written", progress=False)
    assert config2.to_dict() == config.to_dict()
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_cli_round_trip_through_orbax(tmp_path, folder, loaded):
    config, params = loaded
    ckpt = tmp_path / "ckpt"
    assert cli.main(["convert", "--official", str(folder), "--output", str(ckpt)]) == 0
    assert json.loads(load_config(ckpt).to_json()) == json.loads(config.to_json())
    restored = load_params(ckpt)
    assert set(restored) == {"model"}  # no vae/ in this folder
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), restored["model"], params)
    out = tmp_path / "official"
    assert cli.main(["convert", "--to-official", str(ckpt), "--output", str(out)]) == 0
    assert_same_tensors(folder, out)
    assert official.read_config(out).to_dict() == config.to_dict()


# =============================================================================================
# bad input: errors that name the tensor, the expected and the found shape
# =============================================================================================


def _shifted_pos_embed(t):
    t["pos_embed"] = t["pos_embed"].copy()
    t["pos_embed"][0, 100, 3] += 1e-3


BAD_TENSORS = {
    "missing": (
        lambda t: t.pop("llm.layers.1.mlp.down_proj.weight"),
        r"missing tensors \['llm.layers.1.mlp.down_proj.weight'\]",
    ),
    "unexpected": (
        lambda t: t.update({"input_final_layer.weight": np.zeros((16, D), np.float32)}),
        r"unexpected tensors \['input_final_layer.weight'\]",
    ),
    "shape": (
        lambda t: t.update({"llm.layers.0.self_attn.qkv_proj.weight": np.zeros((3 * D, D + 1), np.float32)}),
        r"'llm.layers.0.self_attn.qkv_proj.weight' has shape \(192, 65\), but the config needs \(192, 64\)",
    ),
    "conv_shape": (
        lambda t: t.update({"x_embedder.proj.weight": np.zeros((D, 4, 1, 1), np.float32)}),
        r"'x_embedder.proj.weight' has shape \(64, 4, 1, 1\), but the config needs \(64, 4, 2, 2\)",
    ),
    "pos_embed_shape": (
        lambda t: t.update({"pos_embed": t["pos_embed"][:, :100]}),
        r"'pos_embed' has shape \(1, 100, 64\), but the config needs \(1, 36864, 64\)",
    ),
    "pos_embed_values": (_shifted_pos_embed, r"'pos_embed' differs from the 2-D sin-cos table"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_bad_tensors_are_named(tmp_path, tensors, case):
    edit, message = BAD_TENSORS[case]
    bad = dict(tensors)
    edit(bad)
    write_folder(tmp_path, bad)
    with pytest.raises(ValueError, match=message):
        official.load(tmp_path, progress=False)


def test_bad_metadata_is_named(tmp_path, tensors):
    tokenizer = tokenizer_json()
    tokenizer["added_tokens"] = [a for a in tokenizer["added_tokens"] if a["content"] != "</img>"]
    write_folder(tmp_path / "token", tensors, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"no single token for \['</img>'\]"):
        official.load(tmp_path / "token", progress=False)

    config = phi3_config_json()
    del config["intermediate_size"]
    write_folder(tmp_path / "config", tensors, config=config)
    with pytest.raises(ValueError, match=r"missing entries \['intermediate_size'\]"):
        official.load(tmp_path / "config", progress=False)

    write_folder(tmp_path / "weights", tensors)
    (tmp_path / "weights" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        official.load(tmp_path / "weights", progress=False)

    # a model the official LVM class cannot hold (its pos_embed grid is fixed at 192)
    with pytest.raises(ValueError, match="pos_embed_max_size = 16"):
        official.save(tmp_path / "tiny", load_experiment("tiny_cpu"), {}, progress=False)


def test_parity_inputs_are_checked(loaded):
    config, params = loaded
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=r"clean has shape \(3, 4, 8, 8\), expected \(2, 4, 8, 8\)"):
        parity.predict_x1(
            config, params, [1, 1, 2], nchw(rng, 4, 4, 8, 8), np.zeros(4), nchw(rng, 3, 4, 8, 8)
        )
    with pytest.raises(ValueError, match=r"noisy has shape \(2, 8, 8, 4\)"):
        parity.predict_x1_cfg(config, params, nchw(rng, 1, 4, 8, 8), nchw(rng, 2, 8, 8, 4), 0.5)
