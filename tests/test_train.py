"""The train step: the same losses on 1 device and on 8 sharded devices; a tiny model overfits."""

import contextlib
import io

import jax
import numpy as np
import pytest
from conftest import load_experiment

from vgpt_jax import config as config_lib
from vgpt_jax.models.video_gpt import REMAT_POLICIES, ModelConfig, VideoGPT, example_inputs
from vgpt_jax.parallel.mesh import make_mesh, sharding_context
from vgpt_jax.train.step import Trainer, learning_rate_schedule


def _run(config, devices, steps, batch, initial_state=None):
    """Trains ``steps`` steps; starts from ``initial_state`` (host arrays) resharded, or a fresh init."""
    trainer = Trainer(config, make_mesh(config.mesh, devices))
    if initial_state is None:
        state = trainer.init()
    else:
        state = jax.device_put(initial_state, trainer.state_shardings)
    start = jax.tree.map(np.asarray, state)
    sharded = trainer.shard_batch(batch)
    losses = []
    for _ in range(steps):
        state, metrics = trainer.step(state, sharded)
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.tree.map(np.asarray, state.params), trainer, start


def _batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=shape).astype(np.float32)
    return {"target": target, "clean": target + 0.1 * rng.normal(size=shape).astype(np.float32)}


@pytest.fixture(scope="module")
def single_device_run():
    """Global batch 8 on one device: the reference for every mesh."""
    config = load_experiment("tiny_cpu")
    config.data.per_device_batch_size = 8
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    batch = _batch((8, 8, 8, 8, 4))
    losses, params, _, start = _run(config, jax.devices()[:1], 3, batch)
    return batch, losses, params, start


@pytest.mark.parametrize(
    "mesh",
    [
        dict(data=1, fsdp=8, tensor=1, sequence=1),
        dict(data=2, fsdp=2, tensor=2, sequence=1),
        dict(data=1, fsdp=2, tensor=2, sequence=2),
    ],
    ids=["fsdp8", "data2-fsdp2-tensor2", "fsdp2-tensor2-sequence2"],
)
def test_sharded_step_matches_single_device(single_device_run, mesh):
    """The same global batch and start on 8 devices: same losses and parameters to fp32 tolerance."""
    batch, ref_losses, ref_params, start = single_device_run
    config = load_experiment("tiny_cpu")
    dp = mesh["data"] * mesh["fsdp"]
    config.data.per_device_batch_size = 8 // dp
    config.mesh.update(**mesh)
    losses, params, trainer, _ = _run(config, jax.devices()[:8], 3, batch, initial_state=start)

    assert trainer.global_batch == 8
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    # the parameters really are sharded: the embedding dimension of a layer kernel is split
    qkv = trainer.state_shardings.params["backbone"]["layers"]["attention"]["qkv"]
    assert qkv.spec[1] == "fsdp" and mesh["fsdp"] > 1


def test_block_sparse_backend_per_shard_matches_single_device(single_device_run):
    """The Pallas backend runs per shard (batch, heads and queries split, keys gathered) and gives
    the single-device ``xla`` run's losses and parameters; here under the ``attention`` remat
    policy, whose saved names sit inside the kernel's VJP and the shard_map."""
    batch, ref_losses, ref_params, start = single_device_run
    config = load_experiment("tiny_cpu")
    config.model.attention.backend = "block_sparse"
    config.model.remat_policy = "attention"
    config.data.per_device_batch_size = 4
    config.mesh.update(data=1, fsdp=2, tensor=2, sequence=2)
    losses, params, _, _ = _run(config, jax.devices()[:8], 3, batch, initial_state=start)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def _live_kernel_calls(jaxpr, name: str) -> int:
    """Pallas calls named ``name`` whose outputs something reads, in ``jaxpr`` and its sub-jaxprs.

    ``make_jaxpr`` keeps dead code: remat's replay of the forward may hold a kernel call whose
    outputs the policy made redundant, which XLA then removes. Only live calls cost time.
    """
    live = 0
    for i, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name == "pallas_call":
            kernel = eqn.params.get("name", eqn.params.get("name_and_src_info"))  # by jax version
            if str(kernel).split()[0] == name:
                readers = [v for later in jaxpr.eqns[i + 1 :] for v in later.invars] + list(jaxpr.outvars)
                live += any(any(r is out for r in readers) for out in eqn.outvars)
            continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    live += _live_kernel_calls(inner, name)
    return live


@pytest.mark.parametrize(
    "policy, forward_kernels",
    [("none", 1), ("full", 2), ("attention", 1), ("attention_out", 1), ("attention_offload", 1)],
)
def test_attention_remat_policy_keeps_the_attention_forward_out_of_the_backward(policy, forward_kernels):
    """Full remat re-runs the attention kernel's forward in the backward; the ``attention`` policy
    saves its residuals (through shard_map and the custom VJP), so the step runs it once."""
    config = load_experiment("tiny_cpu")
    config.model.attention.backend = "block_sparse"
    config.model.remat_policy = policy
    config.data.per_device_batch_size = 2
    config.mesh.update(data=1, fsdp=2, tensor=2, sequence=1)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:4]))
    state, batch = trainer.init(), trainer.shard_batch(_batch((4, 8, 8, 8, 4)))
    with sharding_context(trainer.mesh, trainer.axis_rules):
        program = jax.make_jaxpr(trainer._train_step)(state, batch).jaxpr
    assert _live_kernel_calls(program, "block_sparse_attention_fwd") == forward_kernels
    assert _live_kernel_calls(program, "block_sparse_attention_dq") == 1


@pytest.mark.parametrize("policy, saved_qkv", [("attention", 3), ("attention_out", 0)])
def test_attention_policies_save_each_attention_tensor_once(policy, saved_qkv):
    """Under ``attention`` with the block-sparse kernel and a head dim it pads (24 -> 32), the
    backward keeps q, k, v (unpadded) and one attention output, the kernel's padded one;
    ``attention_out`` keeps that output only (the backward recomputes q, k and v, not attention)."""
    config = load_experiment("tiny_cpu")
    config.model.update(hidden_size=96, num_heads=4, num_kv_heads=4, num_layers=1, remat_policy=policy)
    config.model.attention.backend = "block_sparse"
    model = VideoGPT(ModelConfig.from_config(config))
    inputs = example_inputs(config, num_frames=2)  # 2 x 2 blocks of 18 tokens: 72
    params = model.init(jax.random.key(0), *inputs)["params"]
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        jax.ad_checkpoint.print_saved_residuals(lambda p: model.apply({"params": p}, *inputs).sum(), params)
    saved = report.getvalue()
    # (layers, batch, tokens, heads, head dim); the kernel pads tokens to its 128-row tiles
    assert saved.count("[1,1,72,4,24]") == saved_qkv, saved
    assert saved.count("[1,1,128,4,32]") == 1, saved


@pytest.mark.parametrize("policy", ["full", "attention", "attention_out", "attention_offload"])
def test_remat_policies_keep_the_gradients_of_no_remat(policy):
    """A policy decides what is stored or recomputed, never what is computed: every gradient equals
    the one without remat."""
    config = load_experiment("tiny_cpu")
    config.model.update(num_layers=2)
    inputs = example_inputs(config, num_frames=2)

    def grads(remat_policy):
        c = config.copy_and_resolve_references()
        c.model.remat_policy = remat_policy
        model = VideoGPT(ModelConfig.from_config(c))
        params = model.init(jax.random.key(0), *inputs)["params"]
        out_shape = jax.eval_shape(lambda p: model.apply({"params": p}, *inputs), params).shape
        weights = jax.random.normal(jax.random.key(1), out_shape)
        return jax.jit(jax.grad(lambda p: (model.apply({"params": p}, *inputs) * weights).sum()))(params)

    for a, b in zip(jax.tree.leaves(grads(policy)), jax.tree.leaves(grads("none")), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # fp32: recomputation reorders sums


def test_fresh_init_is_the_same_on_any_mesh(single_device_run):
    """Initialisation draws the same numbers whether the state is sharded or not."""
    _, _, _, start = single_device_run
    config = load_experiment("tiny_cpu")
    config.mesh.update(data=1, fsdp=8, tensor=1, sequence=1)
    trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:8]))
    params = jax.tree.map(np.asarray, trainer.init().params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(start.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiny_model_overfits_one_batch():
    """A fixed batch of smooth moving patterns: the x1 loss falls 10x within 200 steps."""
    config = load_experiment("tiny_cpu")
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    config.data.per_device_batch_size = 2
    config.optim.learning_rate = 3e-3
    yy, xx = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    frames = []
    for b in range(2):
        video = []
        for f in range(8):
            phase = 0.6 * f + 1.3 * b
            video.append(
                np.stack([np.sin(0.7 * xx + phase + c) * np.cos(0.5 * yy - c) for c in range(4)], -1)
            )
        frames.append(video)
    target = np.asarray(frames, np.float32)
    losses, *_ = _run(config, jax.devices()[:1], 200, {"target": target, "clean": target})
    first, last = losses[:5].mean(), losses[-10:].mean()
    assert last < first / 10, (first, last)


def test_learning_rate_schedule_is_constant_with_warmup():
    """Linear 0 -> lr over the warm-up, then constant (the official constant_with_warmup)."""
    config = load_experiment("videogpt_stage2").optim
    schedule = learning_rate_schedule(config)
    np.testing.assert_allclose(
        [float(schedule(s)) for s in (0, 160_000, 320_000, 10**6)], [0.0, 5e-5, 1e-4, 1e-4], rtol=1e-6
    )


def test_learning_rate_schedule_cosine_decay_after_warmup():
    """With decay_steps: lr·(1 + cos(π·k/decay_steps))/2 at k steps past the warm-up, then 0."""
    config = load_experiment("tiny_cpu").optim
    config.update(learning_rate=2e-3, warmup_steps=10, decay_steps=100)
    schedule = learning_rate_schedule(config)
    steps = (5, 10, 35, 60, 110, 200)
    expected = [1e-3, 2e-3, 1e-3 * (1 + np.cos(np.pi / 4)), 1e-3, 0.0, 0.0]
    np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, rtol=1e-5, atol=1e-9)


def test_first_clip_loss_weight():
    """Weight 0 drops the first clip's frames from the loss (its targets no longer matter); weight w
    mixes the per-clip means as (w·n1·L1 + n2·L2) / (w·n1 + n2), with L1, L2 from weights 1 and 0."""
    config = load_experiment("tiny_cpu")
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    config.layout.update(partition="fixed", fixed_partition=(3, 5))
    batch = _batch((2, 8, 8, 8, 4))
    key = jax.random.key(3)

    def loss(weight, b=batch):
        config.layout.first_clip_loss_weight = weight
        trainer = Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))
        return float(trainer.loss(trainer.init().params, b, key))

    moved = {**batch, "target": batch["target"].copy()}
    moved["target"][:, :3] += 1.0  # the first clip's targets only
    assert loss(0.0, moved) == pytest.approx(loss(0.0), rel=1e-6)
    assert abs(loss(1.0, moved) - loss(1.0)) > 1e-3
    later = loss(0.0)
    first = (8 * loss(1.0) - 5 * later) / 3
    assert loss(0.5) == pytest.approx((0.5 * 3 * first + 5 * later) / (0.5 * 3 + 5), rel=1e-5)


def test_every_configurable_remat_policy_exists():
    """``validate`` accepts exactly the policies the model can build (plus "none": no remat)."""
    assert set(config_lib.REMAT_POLICIES) == {"none", *REMAT_POLICIES}


def _tiny_trainer(remat_policy: str, scan_unroll: int) -> Trainer:
    config = load_experiment("tiny_cpu")
    config.model.remat_policy = remat_policy
    config.train.scan_unroll = scan_unroll
    config.data.per_device_batch_size = 2
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    return Trainer(config, make_mesh(config.mesh, jax.devices()[:1]))


def _lowered_step(trainer: Trainer):
    state, batch = trainer.init(), trainer.shard_batch(_batch((2, 8, 8, 8, 4)))
    return trainer._step.lower(state, batch)


def _compiled_step_text(trainer: Trainer) -> str:
    return _lowered_step(trainer).compile().as_text()


def _layer_loops(hlo: str) -> int:
    return sum(" while(" in line and "backbone" in line for line in hlo.splitlines())


def test_unrolled_layers_train_as_the_scan_does():
    """``train.scan_unroll >= num_layers``: the same losses and parameters as the rolled scan, from
    the same start, and no loop over the layers in the compiled step."""
    batch = _batch((2, 8, 8, 8, 4), seed=3)
    rolled, unrolled = _tiny_trainer("full", 1), _tiny_trainer("full", 2)
    assert unrolled.model_config.num_layers == 2
    start = jax.tree.map(np.asarray, rolled.init())
    runs = []
    for trainer in (rolled, unrolled):
        state, losses = jax.device_put(start, trainer.state_shardings), []
        for _ in range(2):
            state, metrics = trainer.step(state, trainer.shard_batch(batch))
            losses.append(float(metrics["loss"]))
        runs.append((losses, jax.tree.map(np.asarray, state.params)))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(runs[1][1]), jax.tree.leaves(runs[0][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert _layer_loops(_compiled_step_text(rolled)) > 0
    assert _layer_loops(_compiled_step_text(unrolled)) == 0


def test_unrolled_layers_keep_remat_from_being_merged_away():
    """Without a loop around the layers XLA's CSE may merge remat's recomputation with the forward
    (and keep everything); JAX's guard is an optimization barrier in the lowered step (``prevent_cse``),
    which a scanned stack does not need."""
    barriers = {}
    for policy, unroll in (("full", 2), ("full", 1), ("none", 2)):
        lowered = _lowered_step(_tiny_trainer(policy, unroll))
        barriers[policy, unroll] = lowered.as_text().count("optimization_barrier")
    assert barriers == {("full", 2): 1, ("full", 1): 0, ("none", 2): 0}, barriers
