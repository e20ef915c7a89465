"""The next-clip-diffusion train step: layout, noise, forward, x1 loss, AdamW — one jit program.

The layout (random clip partition, per-clip times, noise, clean-input augmentation, token
attributes and positions) is built inside the step from the step's key, so every host builds the
same structure and all shapes are static. The step takes latents, not pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.manager import abstract_with_shardings
from vgpt_jax.diffusion import flow
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import ModelConfig, VideoGPT, drop_condition, example_inputs, num_params
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.train.flops import official_partition, train_step_flops
from vgpt_jax.train.trainable import ALL, Trainable, load_pretrained


@flax.struct.dataclass
class TrainState:
    """``params``: every parameter, trained and frozen; ``opt_state``: of the trained ones only."""

    step: jax.Array
    params: Any
    opt_state: Any


def init_state(
    params: Any, optimizer: optax.GradientTransformation, trainable: Trainable = ALL
) -> TrainState:
    """Step 0 with ``params`` and a fresh optimiser state for its ``trainable`` part (boxed
    parameters give boxed moments)."""
    trained, _ = trainable.split(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(trained))


def apply_gradients(
    state: TrainState, grads: Any, optimizer: optax.GradientTransformation, trainable: Trainable = ALL
) -> TrainState:
    """One optimiser update of ``state`` with ``grads`` (of its ``trainable`` part); the frozen part
    is handed through as it is. The step count advances by one."""
    trained, frozen = trainable.split(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, trained)
    params = trainable.merge(optax.apply_updates(trained, updates), frozen)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state)


def tree_is_finite(tree: Any) -> jax.Array:
    """A device bool scalar: every floating-point leaf of ``tree`` is finite (integer leaves always are)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


# Metrics keys of the step's finiteness (device bools, popped by the loop): whether the loss and
# the updated parameters and optimiser state are finite, and whether the step's batch is.
FINITE = "finite"
BATCH_FINITE = "batch_finite"


def finiteness(loss: jax.Array, updated: TrainState, batch: Any) -> dict[str, jax.Array]:
    """The step's :data:`FINITE` and :data:`BATCH_FINITE` flags.

    The loss comes from the parameters before the update, so it alone would let a step that
    overflows the update pass; a checkpoint is only ever written from a state called finite. The
    batch's flag tells a bad input from diverged parameters.
    """
    return {
        FINITE: jnp.isfinite(loss) & tree_is_finite((updated.params, updated.opt_state)),
        BATCH_FINITE: tree_is_finite(batch),
    }


def learning_rate_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear 0 -> lr over ``warmup_steps``; then constant (``decay_steps`` 0: the official
    constant_with_warmup) or a cosine from lr to 0 over ``decay_steps``."""
    if optim.decay_steps:
        after = optax.cosine_decay_schedule(optim.learning_rate, optim.decay_steps)
    else:
        after = optax.constant_schedule(optim.learning_rate)
    if optim.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps)
    return optax.join_schedules([warmup, after], [optim.warmup_steps])


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decoupled decay on every parameter, as the official run)."""
    adamw = optax.adamw(
        learning_rate_schedule(optim),
        b1=optim.b1,
        b2=optim.b2,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    if optim.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), adamw)
    return adamw


class StateInit:
    """Init, per-step keys and step compilation shared by the trainers of Video-GPT and of the tokenizer.

    A subclass sets ``config``, ``mesh``, ``axis_rules`` (its model's logical axis rules),
    ``optimizer``, ``_init`` (the jit of ``_init_unboxed`` with the state's shardings) and ``_step``
    (the jit of its train step, which :meth:`compile` lowers), may set
    ``trainable`` (default: every parameter) and defines ``init_params(key)`` (boxed parameters).
    """

    trainable: Trainable = ALL

    def _init_annotated(self, key: jax.Array) -> TrainState:
        return init_state(self.init_params(key), self.optimizer, self.trainable)

    def _init_unboxed(self, key: jax.Array) -> TrainState:
        return nn.unbox(self._init_annotated(key))

    def init(self, key: jax.Array | None = None) -> TrainState:
        """A fresh, sharded train state (key: default from ``config.seed``)."""
        key = jax.random.key(self.config.seed) if key is None else key
        with sharding_context(self.mesh, self.axis_rules):
            return self._init(key)

    def step_key(self, step: jax.Array) -> jax.Array:
        """The step's randomness, folded from (seed, step), so a resumed run draws the same."""
        return jax.random.fold_in(jax.random.key(self.config.seed), step)

    def compile(self, state: TrainState, batch: Any):
        """The train step compiled for these arguments (the loop runs it, and prints its memory plan)."""
        with sharding_context(self.mesh, self.axis_rules):
            return self._step.lower(state, batch).compile()


class Trainer(StateInit):
    """Builds the model, optimiser, shardings and the jit-compiled init and train step for a mesh.

    Batches are dicts of latents in channels-last layout:
      ``target`` (B, N, h, w, C): x1, the frames to denoise;
      ``clean`` (B, N, h, w, C): the clean copies' inputs (an independent posterior sample of the
      same frames; pass ``target`` again if there is only one);
      ``condition`` (with ``config.condition.kind`` other than "none"): class ids (B,) int32 or
      text ids (B, P) int32 (negative = pad), see ``VideoGPT.embed_condition``.
    """

    # config sections whose fields shape the state (the tokenizer's sizes set the latents'; the
    # LoRA section decides which parameters exist and which have optimiser state)
    STATE_SECTIONS = ("model.", "tokenizer.", "lora.")
    OPTIM_SECTION = "optim"

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
        if config.model.fp8_projections:
            raise ValueError(
                "config.model.fp8_projections = True is for sampling: training in float8 would need "
                "scaled gradients, which this project does not build; train with it off"
            )
        self.config = config
        self.mesh = mesh
        self.axis_rules = config.mesh.logical_axis_rules
        self.sizes = config_lib.sizes(config)
        self.model_config = dataclasses.replace(
            ModelConfig.from_config(config), scan_unroll=config.train.scan_unroll
        )
        self.model = VideoGPT(self.model_config)
        self.optimizer = make_optimizer(config.optim)
        self.trainable = Trainable.from_config(config)
        self.global_batch = config.data.per_device_batch_size * mesh_lib.data_parallel_size(mesh)
        with sharding_context(mesh, self.axis_rules):
            abstract = jax.eval_shape(self._init_annotated, jax.random.key(0))
            self.state_shardings = mesh_lib.tree_shardings(mesh, abstract, self.axis_rules)
        self.abstract_state = mesh_lib.unboxed(abstract)
        n, h, w, c = (
            self.sizes.num_frames,
            config.data.latent_height,
            config.data.latent_width,
            config.model.latent_channels,
        )
        self.batch_shape = (self.global_batch, n, h, w, c)
        batch_sharding = mesh_lib.batch_sharding(mesh, 5)
        self.batch_shardings = {"target": batch_sharding, "clean": batch_sharding}
        if config.condition.kind != "none":
            ndim = 1 if config.condition.kind == "class" else 2
            self.batch_shardings["condition"] = mesh_lib.batch_sharding(mesh, ndim)
        self._init = jax.jit(self._init_unboxed, out_shardings=self.state_shardings)
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, self.batch_shardings),
            out_shardings=(self.state_shardings, mesh_lib.replicated(mesh)),
            donate_argnums=(0,),
        )

    # -- init -----------------------------------------------------------------------------------
    def init_params(self, key: jax.Array):
        """Boxed (logically annotated) parameters."""
        return self.model.init(key, *example_inputs(self.config))["params"]

    def initial_state(self, log: Callable[[str], None] = print) -> TrainState:
        """Step 0: a fresh state, its parameters loaded from ``train.init_from`` when set."""
        state = self.init()
        init_from = self.config.train.init_from
        if init_from:
            target = abstract_with_shardings(self.abstract_state.params, self.state_shardings.params)
            state = state.replace(params=load_pretrained(init_from, state.params, target))
            log(f"initialised the parameters from {init_from}")
        elif self.trainable.adapters_only:
            log(
                "warning: config.lora.rank > 0 without train.init_from trains adapters on a random, frozen "
                "model (whose zero-initialised output layer gives them no gradient): set train.init_from"
            )
        return state

    def step_cost(self, state: TrainState, compiled=None) -> tuple[float, dict[str, float]]:
        """(global FLOPs, {"tokens": n}) of one step, both counted as the official comparator counts
        them: on the official sequence of a representative clip partition (LoRA: no weight gradients
        of the frozen weights)."""
        partition = official_partition(self.config.data.num_frames, self.config.seed)
        frozen = self.trainable.adapters_only
        flops = self.global_batch * train_step_flops(self.config, partition, num_params(state.params), frozen)
        tokens = self.global_batch * (2 * sum(partition) - partition[-1]) * self.sizes.block_len
        return flops, {"tokens": tokens}

    # -- step -----------------------------------------------------------------------------------
    def clip_ids(self, key: jax.Array, batch: int) -> jax.Array:
        """(B, N) clip ids: the official random partition, one clip per frame, or a fixed partition."""
        n = self.sizes.num_frames
        if self.config.layout.partition == "per_frame":
            return jnp.broadcast_to(layout.per_frame_clip_ids(n), (batch, n))
        if self.config.layout.partition == "fixed":
            ids = layout.clip_ids_from_partition(self.config.layout.fixed_partition)
            return jnp.broadcast_to(jnp.asarray(ids), (batch, n))
        return jax.vmap(layout.random_clip_ids, in_axes=(0, None))(jax.random.split(key, batch), n)

    def loss(self, params, batch: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        """x1 loss of one batch under the step's randomness (spec §6)."""
        target = batch["target"]
        part_key, noise_key = jax.random.split(key)
        clip_ids = self.clip_ids(part_key, target.shape[0])
        inputs = flow.training_inputs(
            noise_key, target, batch["clean"], clip_ids, self.config.layout.clean_noise_min
        )
        condition = batch.get("condition")
        prefix = 0
        if condition is not None:
            # a stream of its own, so the partition and noise draws are those of an unconditioned run
            drop_key = jax.random.fold_in(key, 1)
            condition = drop_condition(self.model_config, drop_key, condition, self.config.condition.dropout)
            prefix = self.model_config.condition_length
        attrs, positions = layout.training_layout(clip_ids, self.sizes.tokens_per_frame, prefix)
        prediction = self.model.apply(
            {"params": params}, inputs.noisy, inputs.clean, inputs.t, attrs, positions, condition
        )
        first_clip_weight = self.config.layout.first_clip_loss_weight
        frame_weight = None if first_clip_weight == 1.0 else jnp.where(clip_ids == 0, first_clip_weight, 1.0)
        return flow.x1_loss(prediction, target, frame_weight)

    def _train_step(self, state: TrainState, batch: dict[str, jax.Array]):
        trained, frozen = self.trainable.split(state.params)
        key = self.step_key(state.step)

        # differentiated with respect to the trained tree only: no frozen kernel's gradient is formed
        def loss_of_trained(trained):
            return self.loss(self.trainable.merge(trained, frozen), batch, key)

        loss, grads = jax.value_and_grad(loss_of_trained)(trained)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": learning_rate_schedule(self.config.optim)(state.step),
        }
        updated = apply_gradients(state, grads, self.optimizer, self.trainable)
        return updated, {**metrics, **finiteness(loss, updated, batch)}

    def step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimiser step; ``state`` is donated. The metrics include the :func:`finiteness` flags."""
        with sharding_context(self.mesh, self.axis_rules):
            return self._step(state, batch)

    def shard_batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Places a host batch (global shape) on the mesh."""
        return {
            k: jax.device_put(jnp.asarray(batch[k]), self.batch_shardings[k]) for k in self.batch_shardings
        }
