"""Conditions (DESIGN §8) in the config, the model, the train step and the sampler.

The sampler is checked against Euler loops written here in NumPy float64 around the uncached
model (``VideoGPT.sequence``, no KV cache), with the guidance formula written out by hand.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, perturbed

from vgpt_jax import config as config_lib
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, drop_condition, example_inputs, null_condition
from vgpt_jax.nn.tokens import TokenAttrs
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.sample.sampler import Sampler, guide_rows
from vgpt_jax.train.step import Trainer

NUM_CLASSES = 3
ADAPTER_NAMES = ("qkv_lora_a", "qkv_lora_b", "out_lora_a", "out_lora_b")


def conditioned_config(kind: str = "class", **fields):
    config = load_experiment("tiny_cpu")
    config.condition.update(kind=kind, num_classes=NUM_CLASSES, max_text_tokens=4, **fields)
    return config_lib.validate(config)


@pytest.fixture(scope="module")
def class_model():
    config = conditioned_config()
    model = VideoGPT(ModelConfig.from_config(config))
    boxed = jax.jit(lambda k: model.init(k, *example_inputs(config, num_frames=2))["params"])(
        jax.random.key(0)
    )
    return config, model, boxed


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (dict(kind="image"), "condition.kind"),
        (dict(kind="class", num_classes=0), "condition.num_classes"),
        (dict(kind="text", max_text_tokens=0), "condition.max_text_tokens"),
        (dict(dropout=1.5), "condition.dropout"),
    ],
)
def test_validation_names_the_field(fields, named):
    config = load_experiment("tiny_cpu")
    config.condition.update(**fields)
    with pytest.raises(ValueError, match=named):
        config_lib.validate(config)


def test_prefix_lengths():
    assert config_lib.condition_length(load_experiment("tiny_cpu")) == 0
    assert config_lib.condition_length(conditioned_config("class")) == 1
    assert config_lib.condition_length(conditioned_config("text")) == 4


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def test_class_table_has_a_null_row_and_logical_axes(class_model):
    config, _, boxed = class_model
    table = boxed["class_embed"]
    assert table.names == ("classes", "embed")
    assert table.value.shape == (NUM_CLASSES + 1, config.model.hidden_size)


def test_null_condition_and_dropout():
    cfg = ModelConfig.from_config(conditioned_config("class"))
    np.testing.assert_array_equal(null_condition(cfg, 2), [NUM_CLASSES, NUM_CLASSES])
    ids = jnp.arange(6, dtype=jnp.int32) % NUM_CLASSES
    key = jax.random.key(0)
    np.testing.assert_array_equal(drop_condition(cfg, key, ids, 0.0), ids)
    np.testing.assert_array_equal(drop_condition(cfg, key, ids, 1.0), [NUM_CLASSES] * 6)
    dropped = drop_condition(cfg, key, jnp.zeros((4000,), jnp.int32), 0.1)
    assert 0.08 < float(jnp.mean(dropped == NUM_CLASSES)) < 0.12
    text_cfg = ModelConfig.from_config(conditioned_config("text"))
    text = jnp.asarray([[5, 6, 7, -1], [8, -1, -1, -1]], jnp.int32)
    np.testing.assert_array_equal(drop_condition(text_cfg, key, text, 1.0), -np.ones((2, 4)))


def _training_pass(model, params, condition, prefix, seed=0):
    n = 4
    rng = np.random.default_rng(seed)
    lat = jnp.asarray(rng.normal(size=(2, n, 8, 8, 4)), jnp.float32)
    clip_ids = jnp.asarray(layout.clip_ids_from_partition([2, 2]))[None].repeat(2, 0)
    attrs, positions = layout.training_layout(clip_ids, 16, prefix)
    t = jnp.full((2, n), 0.3)
    return model.apply({"params": params}, lat, lat + 0.1, t, attrs, positions, condition)


def test_text_pads_are_masked():
    """Changing the token row that pads read changes nothing; changing a word's row does."""
    config = conditioned_config("text")
    model = VideoGPT(ModelConfig.from_config(config))
    params = jax.jit(lambda k: model.init(k, *example_inputs(config, num_frames=2))["params"])(
        jax.random.key(0)
    )
    params = perturbed(nn.unbox(params), 0.1)
    text = jnp.asarray([[5, 6, -1, -1], [9, -1, -1, -1]], jnp.int32)
    base = _training_pass(model, params, text, 4)

    def with_row(i):
        table = params["embed_tokens"]["embedding"]
        return {**params, "embed_tokens": {"embedding": table.at[i].add(1.0)}}

    np.testing.assert_allclose(_training_pass(model, with_row(0), text, 4), base, rtol=1e-6, atol=1e-6)
    assert np.abs(_training_pass(model, with_row(5), text, 4) - base)[0].max() > 1e-3


def test_train_step_with_class_condition(class_model):
    """The loss reaches exactly the class rows the batch uses; a step runs with a finite loss."""
    config, _, boxed = class_model
    config.data.per_device_batch_size = 2
    config.condition.dropout = 0.0
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))
    rng = np.random.default_rng(0)
    target = rng.normal(size=trainer.batch_shape).astype(np.float32)
    batch = {"target": target, "clean": target, "condition": jnp.asarray([0, 2], jnp.int32)}
    params = perturbed(nn.unbox(boxed), 0.1)  # the zero-initialised head would block every gradient
    grads = jax.jit(jax.grad(trainer.loss))(params, batch, jax.random.key(1))
    used = np.abs(np.asarray(grads["class_embed"])).max(axis=1) > 0
    np.testing.assert_array_equal(used, [True, False, True, False])
    _, metrics = trainer.step(trainer.init(), trainer.shard_batch(batch))
    assert np.isfinite(float(metrics["loss"]))


def test_a_class_that_decides_the_video_is_learnt():
    """Two classes whose videos are uniformly dark (-1) or light (+1) latents, generated from nothing
    (one clip, no history): after a short training the loss given a video's own class is a fraction
    of the loss given the other class, so the prefix path carries a class into the frames."""
    config = conditioned_config(dropout=0.0)
    config.condition.num_classes = 2
    config.data.update(num_frames=2, per_device_batch_size=8)
    config.layout.update(partition="fixed", fixed_partition=(2,))
    config.optim.update(learning_rate=1e-2, warmup_steps=5, decay_steps=100, weight_decay=0.0)
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))
    labels = jnp.asarray([0, 1] * 4, jnp.int32)
    level = (2.0 * labels - 1.0)[:, None, None, None, None]
    target = jnp.broadcast_to(level, trainer.batch_shape).astype(jnp.float32)
    batch = trainer.shard_batch({"target": target, "clean": target, "condition": labels})
    state = trainer.init()
    for _ in range(60):
        state, _ = trainer.step(state, batch)
    loss = jax.jit(trainer.loss)
    own = float(loss(state.params, batch, jax.random.key(7)))
    other = float(loss(state.params, {**batch, "condition": 1 - labels}, jax.random.key(7)))
    assert own < 0.25 * other, (own, other)


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def test_guide_rows_formula():
    """Hand-made rows, checked against the formula in float64."""
    rng = np.random.default_rng(0)
    full, hist, none = (rng.normal(size=(2, 3)) for _ in range(3))
    w_hist, w_cond = 1.7, 2.5
    want = none + w_hist * (hist - none) + w_cond * (full - hist)
    got = guide_rows(*(jnp.asarray(x, jnp.float32) for x in (full, hist, none)), w_hist, w_cond)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # by hand: 1 + 2·(2 − 1) + 3·(4 − 2) = 9; no history (hist = none): 1 + 3·(4 − 1) = 10
    one, two, four = (jnp.asarray([v]) for v in (1.0, 2.0, 4.0))
    np.testing.assert_allclose(guide_rows(four, two, one, 2.0, 3.0), [9.0])
    np.testing.assert_allclose(guide_rows(four, one, one, 2.0, 3.0), [10.0])
    np.testing.assert_allclose(guide_rows(four, two, one, 1.0, 1.0), four)


def _numpy_loop(predict_rows, combine, noise, steps):
    """Euler in float64 (shift 1) around ``predict_rows(z, t)`` -> rows, guided by ``combine``."""
    sigma = np.arange(steps + 1, dtype=np.float64) / steps
    z = np.asarray(noise, np.float64)
    for i in range(steps):
        rows = [np.asarray(r, np.float64) for r in predict_rows(jnp.asarray(z, jnp.float32), sigma[i])]
        z = z + (sigma[i + 1] - sigma[i]) * (combine(*rows) - z) / (1 - sigma[i])
    return z


def _uncached(model, params, history, g, condition):
    """x1 of one row from the uncached sequence ``[COND][history][clip]``."""
    n, p = history.shape[1], model.cfg.condition_length
    hist_attrs, hist_pos = layout.history_layout(n, 16, p)
    gen_attrs, gen_pos = layout.generation_layout(n, g, 16, p)
    attrs = TokenAttrs(*(jnp.concatenate([h, c])[None] for h, c in zip(hist_attrs, gen_attrs, strict=True)))
    positions = jnp.concatenate([hist_pos, gen_pos])[None]

    @jax.jit
    def predict(z, t):
        tt = jnp.full((1, g), t, jnp.float32)
        return model.apply(
            {"params": params}, history, z, tt, attrs, positions, condition, method=VideoGPT.sequence
        )

    return predict


@pytest.mark.parametrize(
    ("num_history", "w_hist", "w_cond", "backend"),
    [(3, 1.0, 1.0, "xla"), (3, 1.5, 2.0, "xla"), (0, 1.5, 2.0, "xla"), (3, 1.5, 2.0, "block_sparse")],
    ids=str,
)
def test_conditioned_sampling_matches_numpy(class_model, num_history, w_hist, w_cond, backend):
    """Cached, batched, one-jit sampling equals the float64 loop over uncached rows: full (history,
    class), hist (history, null class), none (null class, no history); both weights 1: full only.
    With ``block_sparse`` the clip's attention is clip_attention's: the rows' own keys and their
    cached prefixes (the none row sees the condition's key of its prefix only), merged."""
    config, model, boxed = class_model
    sampler_model = model
    if backend != config.model.attention.backend:
        default, config.model.attention.backend = config.model.attention.backend, backend
        sampler_model = VideoGPT(ModelConfig.from_config(config))
        config.model.attention.backend = default
    params = perturbed(nn.unbox(boxed), 0.1)
    steps, g = 3, 2
    config.sampling.update(
        steps=steps, cfg_scale=w_hist, condition_scale=w_cond, shift=1.0, use_kv_cache=True
    )
    rng = np.random.default_rng(num_history)
    history = jnp.asarray(rng.normal(size=(1, num_history, 8, 8, 4)), jnp.float32)
    noise = jnp.asarray(rng.normal(size=(1, g, 8, 8, 4)), jnp.float32)
    label, null = jnp.asarray([1], jnp.int32), jnp.asarray([NUM_CLASSES], jnp.int32)
    got = np.asarray(Sampler(config, sampler_model).sample_clip(params, history, noise, label))

    full = _uncached(model, params, history, g, label)
    hist = _uncached(model, params, history, g, null)
    none = _uncached(model, params, history[:, :0], g, null)

    def rows(z, t):
        return full(z, t), hist(z, t), none(z, t)

    def combine(x_full, x_hist, x_none):
        if w_hist == w_cond == 1.0:
            return x_full
        return x_none + w_hist * (x_hist - x_none) + w_cond * (x_full - x_hist)

    want = _numpy_loop(rows, combine, noise, steps)
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# The task config
# ---------------------------------------------------------------------------------------------


def test_ucf101_class_to_video_config_and_its_trained_parameters():
    """101 classes on the release backbone at 16 frames of 320x240; LoRA rank 8 trains the adapters
    and the class table: per layer 3072·8 + 8·9216 + 3072·8 + 8·3072 = 147,456, times 32 layers,
    plus the table's (101 + 1)·3072 = 313,344 (by hand)."""
    from vgpt_jax.cli.info import info

    c = config_lib.validate(config_lib.load_experiment("experiments/ucf101_class_to_video.py"))
    assert (c.condition.kind, c.condition.num_classes, c.lora.rank, c.lora.alpha) == ("class", 101, 8, 8.0)
    assert (c.data.num_frames, c.data.latent_height * 8, c.data.latent_width * 8) == (16, 240, 320)
    assert info(c)["trainable_params"] == 32 * 147_456 + 313_344


def test_text_to_video_config_and_its_trained_parameters():
    """64 text tokens on the release backbone at 16 frames of 320x176; LoRA rank 8 trains the
    adapters only (the token table stays frozen): 32 layers of 147,456 (by hand, as above)."""
    from vgpt_jax.cli.info import info

    c = config_lib.validate(config_lib.load_experiment("experiments/text_to_video.py"))
    assert (c.condition.kind, c.condition.max_text_tokens, c.lora.rank, c.lora.alpha) == ("text", 64, 8, 8.0)
    assert (c.data.num_frames, c.data.latent_height * 8, c.data.latent_width * 8) == (16, 176, 320)
    assert info(c)["trainable_params"] == 32 * 147_456


@pytest.mark.parametrize(
    "experiment, condition_params, token_rows",
    [("ucf101_class_to_video", {"class_embed": (102, 64)}, 8), ("text_to_video", {}, 32064)],
)
def test_the_task_configs_runlocal_build(experiment, condition_params, token_rows):
    """``:runlocal`` gives tiny_cpu's model (with the release's 32,064 token rows for text, which
    the release tokenizer's ids index), which initialises; the adapters and the condition's own
    parameters (name -> shape at hidden size 64) are what it trains."""
    local = config_lib.validate(config_lib.load_experiment(f"experiments/{experiment}.py:runlocal"))
    tiny = load_experiment("tiny_cpu").model.to_dict()
    assert local.model.to_dict() == {**tiny, "vocab_size": token_rows}
    local.mesh.update(data=1)
    trainer = Trainer(local, make_mesh(local.mesh, jax.devices()[:1]))
    params = trainer.init().params
    assert params["embed_tokens"]["embedding"].shape == (token_rows, 64)
    assert {name: params[name].shape for name in condition_params} == condition_params
    trained = jax.tree_util.tree_leaves_with_path(trainer.trainable.split(params)[0])
    names = sorted(jax.tree_util.keystr(path) for path, _ in trained)
    assert names == sorted(
        [f"['{name}']" for name in condition_params]
        + [f"['backbone']['layers']['attention']['{k}']" for k in ADAPTER_NAMES]
    )


@pytest.mark.parametrize("kind", ["class", "text"])
def test_a_conditioned_model_has_no_official_folder(kind):
    from vgpt_jax.convert.official import check_official

    config = config_lib.base_config()
    check_official(config)
    config.condition.update(kind=kind, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=f"condition.kind = '{kind}': the official model has no condition"):
        check_official(config)
