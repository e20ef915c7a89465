"""LoRA (issue 20.1): the adapted model against float64 NumPy references of the merged weights,
adapter gradients against float64 finite differences, adapter-only training, init_from, info and
the merged export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, load_experiment
from flax import traverse_util
from numpy_reference import official_training_blocks, ref_forward, rel_err
from test_model import make_clip_inputs, official_weights, ref_rope_params

from vgpt_jax import config as config_lib
from vgpt_jax.models import layout, video_gpt
from vgpt_jax.nn.attention import SelfAttention
from vgpt_jax.nn.lora import LoRA
from vgpt_jax.parallel.mesh import make_mesh, sharding_context, tree_shardings
from vgpt_jax.train.step import Trainer

RANK, ALPHA = 2, 3.0  # scale alpha / rank = 1.5, so a missing or inverted scale shows
ADAPTERS = ("qkv_lora_a", "qkv_lora_b", "out_lora_a", "out_lora_b")
NUM_CLASSES = 3
CLASS_TABLE = ("class_embed",)  # a class condition's table: new, so trained with the adapters


def lora_config(
    rank: int = RANK, alpha: float = ALPHA, targets: tuple[str, ...] = ("qkv", "out"), condition: str = "none"
):
    c = load_experiment("tiny_cpu")
    c.lora.update(rank=rank, alpha=alpha, targets=targets)
    c.condition.update(kind=condition, num_classes=NUM_CLASSES)
    c.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    return config_lib.validate(c)


def random_params(config, seed: int, b_scale: float = 0.3):
    """NumPy float32 parameters of ``config``'s model: every base weight random, adapters random
    with B scaled by ``b_scale`` (0: a fresh adapter's B)."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda a: (0.1 * rng.standard_normal(a.shape)).astype(np.float32), video_gpt.abstract_params(config)
    )
    attention = params["backbone"]["layers"]["attention"]
    for name in ADAPTERS:
        if name in attention:
            scale = b_scale if name.endswith("_b") else 0.3
            attention[name] = (scale * rng.standard_normal(attention[name].shape)).astype(np.float32)
    return params


def merged_float64(params, scale: float):
    """The base parameters with ``W + scale · A B`` folded in, in float64, written from the shapes
    of SelfAttention's docstring: qkv (L, D, 3, H, Dh) += A (L, D, r) B (L, r, 3, H, Dh);
    out (L, H, Dh, D) += A (L, H, Dh, r) B (L, r, D)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    att = p["backbone"]["layers"]["attention"]
    if "qkv_lora_a" in att:
        att["qkv"] = att["qkv"] + scale * np.einsum(
            "ldr,lrshk->ldshk", att.pop("qkv_lora_a"), att.pop("qkv_lora_b")
        )
    if "out_lora_a" in att:
        att["out"] = att["out"] + scale * np.einsum(
            "lhkr,lrd->lhkd", att.pop("out_lora_a"), att.pop("out_lora_b")
        )
    return p


PARTITION = [3, 2, 3]


def training_inputs(config):
    d = config.data
    clip_ids, t, noisy, clean = make_clip_inputs(
        [PARTITION], seed=12, n=d.num_frames, hw=d.latent_height, c=config.model.latent_channels
    )
    attrs, positions = layout.training_layout(clip_ids, config_lib.sizes(config).tokens_per_frame)
    return noisy, clean, t, attrs, positions


def reference(params64, config, noisy, clean, t):
    """float64 official-layout forward of row 0: (N, h, w, C)."""
    mc = video_gpt.ModelConfig.from_config(config)
    frames = range(sum(PARTITION))
    out = ref_forward(
        official_weights(params64),
        mc,
        official_training_blocks(PARTITION),
        {f: noisy[0, f].astype(np.float64) for f in frames},
        {f: clean[0, f].astype(np.float64) for f in frames},
        {f: float(t[0, f]) for f in frames},
        ref_rope_params("none", mc.head_dim, config.model.rope.theta),
    )
    return np.stack([out[f] for f in frames])


def apply(config, params, inputs):
    return np.asarray(jax.jit(video_gpt.model_from_config(config).apply)({"params": params}, *inputs))


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,needle",
    [
        (
            {"targets": ("qkv", "mlp")},
            r"'mlp' names no attention projection; each target is one of \('qkv', 'out'\)",
        ),
        ({"rank": -1}, r"config\.lora\.rank = -1"),
        ({"alpha": -2.0}, r"config\.lora\.alpha = -2\.0"),
        ({"rank": 8, "targets": ()}, r"config\.lora\.targets = \(\) is not allowed: at least one of"),
    ],
)
def test_bad_lora_fields_are_named(fields, needle):
    c = load_experiment("tiny_cpu")
    c.lora.update(fields)
    with pytest.raises(ValueError, match=needle):
        config_lib.validate(c)


def test_defaults_are_full_fine_tuning_and_the_release_targets():
    c = config_lib.base_config()
    assert (c.lora.rank, c.lora.alpha, tuple(c.lora.targets)) == (0, 0.0, ("qkv", "out"))
    # a checkpoint's config saved before the section existed means full fine-tuning
    assert config_lib.with_defaults({"model": {}}).lora.rank == 0


# -- the model -------------------------------------------------------------------------------------


def test_adapter_init_shapes_and_axes():
    """PEFT's gaussian init: A ~ N(0, (1/r)²), B = 0; the rank axis is replicated."""
    config = lora_config(rank=8, alpha=0.0)
    model = video_gpt.model_from_config(config)
    inputs = video_gpt.example_inputs(config, num_frames=2)
    boxed = jax.jit(model.init)(jax.random.key(0), *inputs)["params"]["backbone"]["layers"]["attention"]
    shapes = {k: v.value.shape for k, v in boxed.items()}
    assert shapes == {
        "qkv": (2, 64, 3, 4, 16),
        "out": (2, 4, 16, 64),
        "qkv_lora_a": (2, 64, 8),
        "qkv_lora_b": (2, 8, 3, 4, 16),
        "out_lora_a": (2, 4, 16, 8),
        "out_lora_b": (2, 8, 64),
    }
    assert boxed["qkv_lora_a"].names == ("layers", "embed", "lora_rank")
    assert boxed["out_lora_b"].names == ("layers", "lora_rank", "embed")
    a = np.concatenate([np.asarray(boxed[k].value).ravel() for k in ("qkv_lora_a", "out_lora_a")])
    assert np.std(a) == pytest.approx(1 / 8, rel=0.1) and abs(np.mean(a)) < 0.02
    for k in ("qkv_lora_b", "out_lora_b"):
        assert np.all(np.asarray(boxed[k].value) == 0)
    config.mesh.fsdp = 8
    mesh = make_mesh(config.mesh, jax.devices()[:8])
    shardings = tree_shardings(mesh, boxed, config.mesh.logical_axis_rules)
    assert tuple(shardings["qkv_lora_a"].spec) == (None, "fsdp", None)
    # the rank axis replicated; the others as the kernel's (heads over tensor)
    assert tuple(shardings["qkv_lora_b"].spec) == (None, None, None, "tensor", None)


def test_a_fresh_adapter_leaves_the_attention_exactly_as_it_was():
    """B = 0: the layer's output bits are the base layer's. (Through the whole compiled model XLA
    may sum a reduction in another order once the layer has more consumers: that is checked to
    fp32 rounding below.)"""
    clip_ids = np.asarray(layout.clip_ids_from_partition(PARTITION))[None]
    attrs, positions = layout.training_layout(clip_ids, 16)
    length = positions.shape[-1]
    x = np.random.default_rng(0).standard_normal((1, length, 64)).astype(np.float32)
    cos, sin = np.ones((1, length, 16), np.float32), np.zeros((1, length, 16), np.float32)
    adapted = SelfAttention(4, lora=LoRA(RANK, ALPHA, ("qkv", "out")))
    params = jax.jit(adapted.init)(jax.random.key(0), x, cos, sin, attrs)["params"]
    assert np.any(np.asarray(params["qkv_lora_a"]) != 0)
    got = jax.jit(adapted.apply)({"params": params}, x, cos, sin, attrs)[0]
    base = {k: params[k] for k in ("qkv", "out")}
    want = jax.jit(SelfAttention(4).apply)({"params": base}, x, cos, sin, attrs)[0]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_fresh_adapter_leaves_the_model_outputs_to_fp32_rounding():
    config = lora_config()
    params = random_params(config, seed=0, b_scale=0.0)
    base = {k: v for k, v in traverse_util.flatten_dict(params).items() if not k[-1].endswith(ADAPTERS)}
    inputs = training_inputs(config)
    got = apply(config, params, inputs)
    want = apply(lora_config(rank=0), traverse_util.unflatten_dict(base), inputs)
    assert np.std(want) > 0.1
    assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("targets", [("qkv", "out"), ("qkv",), ("out",)])
def test_adapted_model_is_the_float64_model_of_the_merged_weights(targets):
    config = lora_config(targets=targets)
    params = random_params(config, seed=1)
    inputs = training_inputs(config)
    got = apply(config, params, inputs)
    noisy, clean, t, *_ = inputs
    want = reference(merged_float64(params, ALPHA / RANK), config, noisy, clean, t)
    assert rel_err(got[0], want) < 1e-4
    # teeth: the adapter moves the output, and its scale counts
    assert rel_err(got[0], reference(merged_float64(params, 1.0), config, noisy, clean, t)) > 1e-2
    assert rel_err(got[0], reference(merged_float64(params, 0.0), config, noisy, clean, t)) > 1e-2


def test_adapter_gradients_match_float64_finite_differences():
    """d/dθ of Σ R·prediction for entries of all four adapter factors, against central differences
    of the float64 reference model with the merged weights."""
    config = lora_config()
    params = random_params(config, seed=2)
    inputs = training_inputs(config)
    noisy, clean, t, *_ = inputs
    weights = np.random.default_rng(3).standard_normal(noisy[0].shape)
    trained = {k: v for k, v in traverse_util.flatten_dict(params).items() if k[-1].endswith(ADAPTERS)}
    frozen = {k: v for k, v in traverse_util.flatten_dict(params).items() if k not in trained}
    model = video_gpt.model_from_config(config)

    def loss(adapters):
        tree = traverse_util.unflatten_dict({**frozen, **adapters})
        return (model.apply({"params": tree}, *inputs)[0] * weights).sum()

    grads = jax.jit(jax.grad(loss))(trained)

    def ref_loss(tree):
        return float((reference(merged_float64(tree, ALPHA / RANK), config, noisy, clean, t) * weights).sum())

    rng = np.random.default_rng(4)
    got, want, eps = [], [], 1e-5
    for path in trained:
        for _ in range(3):
            index = tuple(int(rng.integers(n)) for n in params_at(params, path).shape)
            central = []
            for sign in (1, -1):
                tree = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
                params_at(tree, path)[index] += sign * eps
                central.append(ref_loss(tree))
            want.append((central[0] - central[1]) / (2 * eps))
            got.append(float(np.asarray(grads[path])[index]))
    got, want = np.array(got), np.array(want)
    assert np.min(np.abs(want)) > 0  # every entry sampled has a gradient
    assert rel_err(got, want) < 1e-3, (got, want)


def params_at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


# -- training ------------------------------------------------------------------------------------


def _batch(rng, shape, classes: bool = False):
    x = rng.normal(size=shape).astype(np.float32)
    batch = {"target": x, "clean": x + 0.1 * rng.normal(size=shape).astype(np.float32)}
    if classes:
        batch["condition"] = rng.integers(0, NUM_CLASSES, size=shape[:1]).astype(np.int32)
    return batch


@pytest.mark.parametrize("condition", ["none", "class"])
def test_a_lora_run_trains_only_the_adapters_in_place(condition):
    """... and a class condition's table, the other parameter that pre-training has not."""
    config = lora_config(alpha=0.0, condition=condition)
    config.optim.warmup_steps = 0  # warm-up's first step has learning rate 0
    config.data.per_device_batch_size = 2
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))
    # a "pre-trained" base (a fresh init's zero output layer would give the adapters no gradient)
    # with the fresh adapters of the init
    fresh = trainer.init()
    base = random_params(config, seed=5)
    flat = traverse_util.flatten_dict(fresh.params)
    trained = [k for k in flat if k[-1].endswith(ADAPTERS) or k == CLASS_TABLE]
    assert len(trained) == 4 + (condition == "class")
    params = {k: flat[k] if k in trained else v for k, v in traverse_util.flatten_dict(base).items()}
    params = jax.device_put(traverse_util.unflatten_dict(params), trainer.state_shardings.params)
    params = jax.tree.map(jnp.copy, params)  # buffers of JAX's own (a NumPy array's are not donated)
    state = fresh.replace(params=params)
    # copies: a NumPy view of a CPU buffer would keep the buffer from being donated
    start = {k: np.array(v, copy=True) for k, v in traverse_util.flatten_dict(state.params).items()}
    rng = np.random.default_rng(0)
    batches = [
        trainer.shard_batch(_batch(rng, trainer.batch_shape, classes=condition == "class")) for _ in range(3)
    ]
    for batch in batches:
        frozen_buffers = {
            k: v.unsafe_buffer_pointer()
            for k, v in traverse_util.flatten_dict(state.params).items()
            if k not in trained
        }
        state, metrics = trainer.step(state, batch)
        after = traverse_util.flatten_dict(state.params)
        # donated and handed through: the frozen weights stay in their buffers, never copied
        assert {k: after[k].unsafe_buffer_pointer() for k in frozen_buffers} == frozen_buffers
    assert np.isfinite(float(metrics["loss"]))
    after = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state.params).items()}
    for k, v in after.items():
        if k in trained:
            assert not np.array_equal(v, start[k]), k  # A moves once B is non-zero (step 2)
        else:
            np.testing.assert_array_equal(v, start[k], err_msg=str(k))
    # optimiser moments exist for the trained alone: Adam's mu and nu, one entry per trained entry
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
    trained_shapes = [start[k].shape for k in trained]
    assert sorted(x.shape for x in moments) == sorted(trained_shapes * 2)


def _dot_output_shapes(jaxpr) -> set[tuple[int, ...]]:
    shapes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.add(tuple(sorted(eqn.outvars[0].aval.shape)))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes |= _dot_output_shapes(sub)
    return shapes


@pytest.mark.parametrize("rank", [0, RANK])
def test_the_lora_step_forms_no_gradient_of_a_frozen_kernel(rank):
    """No matmul of the LoRA step produces an array of a frozen kernel's shape (any axis order),
    which the full fine-tuning step does for every kernel (its weight gradients)."""
    config = lora_config(rank=rank)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))
    batch = {k: jax.ShapeDtypeStruct(trainer.batch_shape, np.float32) for k in ("target", "clean")}
    with sharding_context(trainer.mesh, trainer.axis_rules):
        jaxpr = jax.make_jaxpr(trainer._train_step)(trainer.abstract_state, batch).jaxpr
    kernels = {
        ("backbone", "layers", "attention", "qkv"),
        ("backbone", "layers", "attention", "out"),
        ("backbone", "layers", "mlp", "gate_up"),
        ("backbone", "layers", "mlp", "down"),
    }
    flat = traverse_util.flatten_dict(trainer.abstract_state.params)
    kernel_shapes = {tuple(sorted(flat[k].shape[1:])) for k in kernels}  # one layer's
    formed = kernel_shapes & _dot_output_shapes(jaxpr)
    assert formed == (set() if rank else kernel_shapes)


# -- init_from, info, export ----------------------------------------------------------------------


def _loop_config(tmp_path, rank: int):
    c = lora_config(rank=rank)
    c.data.per_device_batch_size = 1
    c.train.update(steps=1, log_every=1, checkpoint_every=1, peak_tflops=1.0)
    c.optim.learning_rate = 0.0  # the one step leaves the parameters as loaded
    return c


def _batches():
    rng = np.random.default_rng(0)
    while True:
        yield _batch(rng, (1, 8, 8, 8, 4))


def test_init_from_a_checkpoint_without_adapters_loads_the_frozen_base(tmp_path):
    from vgpt_jax.checkpoint.params import save_params
    from vgpt_jax.train.loop import train

    base_config = _loop_config(tmp_path, rank=0)
    pretrained = random_params(base_config, seed=6)  # e.g. a converted release checkpoint
    save_params(tmp_path / "pretrained", {"model": pretrained}, base_config)
    c = _loop_config(tmp_path, rank=RANK)
    c.train.init_from = str(tmp_path / "pretrained")
    lines = []
    mesh = make_mesh(c.mesh, jax.devices()[:1])
    state = train(c, str(tmp_path / "run"), _batches(), mesh=mesh, log=lines.append)
    assert any("initialised the parameters from" in line for line in lines)
    got = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state.params).items()}
    want = traverse_util.flatten_dict(pretrained)
    fresh = traverse_util.flatten_dict(Trainer(c, mesh).init().params)  # the run's own init (seed 0)
    assert sorted(got) == sorted([*want, *(k for k in fresh if k[-1].endswith(ADAPTERS))])
    for k, v in got.items():
        np.testing.assert_array_equal(v, want[k] if k in want else np.asarray(fresh[k]), err_msg=str(k))


def test_init_from_refuses_adapters_the_config_does_not_ask_for_and_missing_weights(tmp_path):
    from vgpt_jax.checkpoint.params import save_params
    from vgpt_jax.train.trainable import load_pretrained

    adapted = lora_config()
    save_params(tmp_path / "adapted", {"model": random_params(adapted, seed=7)}, adapted)
    full = lora_config(rank=0)
    abstract = video_gpt.abstract_params(full)
    with pytest.raises(ValueError, match=r"holds LoRA adapters .*without --keep-adapter"):
        load_pretrained(str(tmp_path / "adapted"), None, abstract)

    partial = random_params(full, seed=8)
    del partial["backbone"]["layers"]["mlp"]["down"]
    save_params(tmp_path / "partial", {"model": partial}, full)
    with pytest.raises(ValueError, match="missing: backbone/layers/mlp/down"):
        load_pretrained(str(tmp_path / "partial"), None, abstract)

    # a checkpoint that holds the adapters (an export with --keep-adapter) restores them too
    fresh = random_params(adapted, seed=9, b_scale=0.0)
    loaded = load_pretrained(str(tmp_path / "adapted"), fresh, video_gpt.abstract_params(adapted))
    saved = traverse_util.flatten_dict(random_params(adapted, seed=7))
    for k, v in traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=str(k))


@pytest.mark.parametrize("rank", [0, RANK])
def test_init_from_an_unconditioned_checkpoint_keeps_the_fresh_class_table(tmp_path, rank):
    """A class-conditioned fine-tune (LoRA or full) from a checkpoint without ``class_embed``:
    the table keeps the run's value, the adapters too, and every saved weight loads bit-exactly."""
    from vgpt_jax.checkpoint.params import save_params
    from vgpt_jax.train.trainable import load_pretrained

    base_config = lora_config(rank=0)
    pretrained = random_params(base_config, seed=10)
    save_params(tmp_path / "pretrained", {"model": pretrained}, base_config)
    conditioned = lora_config(rank=rank, condition="class")
    fresh = random_params(conditioned, seed=11, b_scale=0.0)
    loaded = traverse_util.flatten_dict(
        load_pretrained(str(tmp_path / "pretrained"), fresh, video_gpt.abstract_params(conditioned))
    )
    saved, initial = traverse_util.flatten_dict(pretrained), traverse_util.flatten_dict(fresh)
    new = [CLASS_TABLE, *(k for k in initial if k[-1].endswith(ADAPTERS))]
    assert sorted(loaded) == sorted([*saved, *new])
    assert initial[CLASS_TABLE].shape == (NUM_CLASSES + 1, base_config.model.hidden_size)
    for k, v in loaded.items():
        np.testing.assert_array_equal(np.asarray(v), initial[k] if k in new else saved[k], err_msg=str(k))

    # a table of other size (a checkpoint fine-tuned on other classes) is named, not loaded
    other = lora_config(rank=0, condition="class")
    save_params(tmp_path / "other", {"model": random_params(other, seed=12)}, other)
    conditioned.condition.num_classes = NUM_CLASSES + 1
    with pytest.raises(ValueError, match="other shapes: class_embed"):
        load_pretrained(str(tmp_path / "other"), None, video_gpt.abstract_params(conditioned))


def test_info_counts_the_trained_parameters():
    """Release backbone, rank 8 on qkv and out of its 32 layers: per layer A_qkv 3072·8 + B_qkv
    8·9216 + A_out 3072·8 + B_out 8·3072 = 147,456, so 4,718,592 trained (by hand)."""
    from vgpt_jax.cli.info import info

    full = info(config_lib.validate(load_experiment("videogpt_stage4")))
    adapted = info(
        config_lib.load_experiment(
            str(REPO / "experiments" / "videogpt_stage4.py"), ["lora.rank=8", "lora.alpha=8.0"]
        )
    )
    assert full["num_params"] == full["trainable_params"] == 3_762_072_592
    assert adapted["trainable_params"] == 4_718_592
    assert adapted["num_params"] == 3_762_072_592 + 4_718_592


def test_export_merges_the_adapters_and_keeps_them_on_request(tmp_path):
    """A LoRA workdir with non-zero B: the default export folds W + (alpha/r)·A B into qkv and out
    (against float64 NumPy) with lora.rank 0, and its model gives the adapted model's outputs to
    fp32 rounding; --keep-adapter writes the parameters as trained."""
    import argparse

    from inference_fixture import flat, make_workdir

    from vgpt_jax.checkpoint.params import load_config, load_params
    from vgpt_jax.cli import export as export_command

    config, written = make_workdir(tmp_path / "workdir", ("lora.rank=2", "lora.alpha=3.0"))
    for output, keep in ((tmp_path / "merged", False), (tmp_path / "kept", True)):
        parser = argparse.ArgumentParser()
        export_command.add_arguments(parser)
        flags = ["--checkpoint", str(tmp_path / "workdir"), "--output", str(output)]
        assert export_command.main(parser.parse_args(flags + (["--keep-adapter"] if keep else []))) == 0

    merged_config, kept_config = load_config(tmp_path / "merged"), load_config(tmp_path / "kept")
    assert (merged_config.lora.rank, kept_config.lora.rank, kept_config.lora.alpha) == (0, 2, 3.0)
    merged, trained = (
        jax.tree.map(np.asarray, load_params(tmp_path / d)["model"]) for d in ("merged", "kept")
    )
    assert flat(trained).keys() == written.keys()
    for k, v in flat(trained).items():
        np.testing.assert_array_equal(v, written[k], err_msg=k)
    attention = trained["backbone"]["layers"]["attention"]
    assert np.abs(attention["qkv_lora_b"]).min() > 0

    want = traverse_util.flatten_dict(merged_float64(trained, 3.0 / 2))
    got = traverse_util.flatten_dict(merged)
    assert sorted(got) == sorted(want)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=str(k))
    assert not np.allclose(got[("backbone", "layers", "attention", "qkv")], attention["qkv"])

    inputs = training_inputs(config)
    adapted_out = apply(config, trained, inputs)
    merged_out = apply(merged_config, merged, inputs)
    assert np.std(adapted_out) > 0.1
    assert rel_err(merged_out, adapted_out) < 1e-5


def test_an_official_folder_is_refused_for_a_model_with_adapters():
    from vgpt_jax.convert.official import check_official

    config = config_lib.base_config()
    check_official(config)
    config.lora.rank = 8
    with pytest.raises(ValueError, match=r"no LoRA adapters.*without --keep-adapter"):
        check_official(config)


def test_train_step_flops_of_lora_leave_out_the_frozen_weight_gradients():
    """Hand-counted: on one frame (partition [1]: the official sequence is its one noisy block) the
    full step costs 3 x 2 N T for the dense weights plus 3 x 4 L D T^2 v for attention; with frozen
    weights the dense part is 2 x 2 N T and attention is unchanged."""
    from vgpt_jax import config as config_lib
    from vgpt_jax.train.flops import train_step_flops, visible_fraction

    config = load_experiment("tiny_cpu")
    m, sizes = config.model, config_lib.sizes(config)
    params, seq = 10_000_000, sizes.block_len  # 2 * 1 - 1 blocks of one frame
    dense = params - m.vocab_size * m.hidden_size
    attention = 3 * 4 * m.num_layers * m.hidden_size * seq**2 * visible_fraction([1], sizes.tokens_per_frame)
    assert train_step_flops(config, [1], params) == pytest.approx(6 * dense * seq + attention, rel=1e-12)
    assert train_step_flops(config, [1], params, frozen_weights=True) == pytest.approx(
        4 * dense * seq + attention, rel=1e-12
    )
