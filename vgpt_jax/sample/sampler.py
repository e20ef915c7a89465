"""Autoregressive clip-by-clip sampling with a KV-cached clean history (spec §9).

A round: the clean history (the last ``window − g`` frames) is run through the backbone once and
its per-layer keys/values are kept (exact: clean tokens never attend to noisy ones); then the
whole Euler loop over the linear grid runs inside one ``lax.fori_loop``. Each step evaluates the
conditional row (history + clip at frames n…n+g−1) and the history-free CFG row (the clip at
frames 0…g−1) in one batched call, converts x1 to a velocity, guides and steps.

With a condition (DESIGN §8) the prefill holds the condition's tokens before the history, once
with the condition and once with the null condition, and three rows are guided (two without
history): full (history, condition), hist (history, null condition), none (null condition only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from tqdm.auto import tqdm

from vgpt_jax.diffusion import flow
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import VideoGPT, condition_is_pad, null_condition
from vgpt_jax.nn.attention import KVPrefix
from vgpt_jax.nn.tokens import TokenAttrs, batched_attrs


def _rows(x: jax.Array, batch: int) -> jax.Array:
    return jnp.broadcast_to(x, (batch, *x.shape))


def _stack_rows(first: TokenAttrs, second: TokenAttrs) -> TokenAttrs:
    return TokenAttrs(*(jnp.concatenate([a, b], axis=0) for a, b in zip(first, second, strict=True)))


def guide_rows(
    full: jax.Array, hist: jax.Array, none: jax.Array, history_scale: float, condition_scale: float
) -> jax.Array:
    """DESIGN §8: x_none + w_hist (x_hist − x_none) + w_cond (x_full − x_hist), any equal shapes.

    Without history, pass ``hist = none``: ordinary condition guidance with w_cond.
    """
    return none + history_scale * (hist - none) + condition_scale * (full - hist)


def _conditioned_predictor(
    model: VideoGPT,
    variables,
    history: jax.Array,
    condition: jax.Array,
    num_frames: int,
    tokens_per_frame: int,
    history_scale: float,
    condition_scale: float,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """predict(z (B, g, h, w, C), t) -> the guided x1 of a conditioned clip after ``history``.

    The prefill runs ``[condition][history]`` for the condition and the null condition (2B rows)
    once; each step denoises the rows full, hist (only with history) and none (the null prefill
    with its history hidden as pad) in one call. Both scales 1: the full row alone.
    """
    cfg = model.cfg
    b, n = history.shape[:2]
    g, s, p = num_frames, tokens_per_frame, cfg.condition_length
    guided = history_scale != 1.0 or condition_scale != 1.0
    conditions = jnp.concatenate([condition, null_condition(cfg, b)] if guided else [condition], axis=0)
    prefill_rows = conditions.shape[0]
    hist_attrs, hist_pos = layout.history_layout(n, s, p)
    key_attrs = layout.with_prefix_pads(
        batched_attrs(hist_attrs, prefill_rows), condition_is_pad(cfg, conditions)
    )
    kv = model.apply(
        variables,
        jnp.tile(history, (prefill_rows // b, 1, 1, 1, 1)),
        key_attrs,
        _rows(hist_pos, prefill_rows),
        conditions,
        method=VideoGPT.prefill,
    )
    rows = [(0, n, False)]  # (prefill block, first frame, history hidden) of the full row
    if guided:
        rows += [(1, n, False)] * (n > 0) + [(1, 0, True)]  # hist (with a history only), none

    def block(x, i, axis):  # rows of prefill block i
        return jax.lax.slice_in_dim(x, i * b, (i + 1) * b, axis=axis)

    def row_keys(i, hide_history):  # key attrs of a row over prefill block i
        attrs = TokenAttrs(*(block(a, i, 0) for a in key_attrs))
        return attrs._replace(is_pad=attrs.is_pad.at[:, p:].set(True)) if hide_history else attrs

    prefix = KVPrefix(*(jnp.concatenate([block(x, i, 1) for i, _, _ in rows], axis=1) for x in kv))
    prefix_attrs = functools.reduce(_stack_rows, [row_keys(i, hide) for i, _, hide in rows])
    q_layouts = [layout.generation_layout(first, g, s, p) for _, first, _ in rows]
    q_attrs = functools.reduce(
        _stack_rows, [TokenAttrs(*(_rows(a, b) for a in attrs)) for attrs, _ in q_layouts]
    )
    q_pos = jnp.concatenate([_rows(pos, b) for _, pos in q_layouts])

    def predict(z, t):
        x1 = model.apply(
            variables,
            jnp.tile(z, (len(rows), 1, 1, 1, 1)),
            jnp.full((len(rows) * b, g), t),
            q_attrs,
            q_pos,
            prefix,
            prefix_attrs,
            method=VideoGPT.denoise,
        )
        if not guided:
            return x1
        full, hist, none = x1[:b], x1[b : 2 * b], x1[-b:]  # without history, hist is none
        return guide_rows(full, hist, none, history_scale, condition_scale)

    return predict


def sample_clip(
    model: VideoGPT,
    params,
    history: jax.Array,
    noise: jax.Array,
    condition: jax.Array | None = None,
    *,
    steps: int,
    cfg_scale: float,
    shift: float,
    use_kv_cache: bool,
    condition_scale: float = 1.0,
) -> jax.Array:
    """Generates one clip after ``history``.

    history (B, n, h, w, C) clean latents (n >= 0); noise (B, g, h, w, C) the initial z at t = 0;
    ``condition``: ids as ``VideoGPT.embed_condition`` (B,) or (B, P), guided by
    ``condition_scale`` (needs ``use_kv_cache``), ``cfg_scale`` guiding by the history.
    Returns the final z (B, g, h, w, C): the guided x1 of the last step.
    """
    b, n = history.shape[:2]
    g = noise.shape[1]
    s = (history.shape[-3] // model.cfg.patch_size) * (history.shape[-2] // model.cfg.patch_size)
    guided = cfg_scale != 1.0
    sigmas = flow.time_grid(steps, shift)
    variables = {"params": params}

    if condition is not None:
        if not use_kv_cache:
            raise ValueError("conditioned sampling runs with the KV cache: set sampling.use_kv_cache = True")
        predict = _conditioned_predictor(
            model, variables, history, condition, g, s, cfg_scale, condition_scale
        )
        return _euler_loop(predict, sigmas, noise)

    hist_attrs, hist_pos = layout.history_layout(n, s)
    cond_attrs, cond_pos = layout.generation_layout(n, g, s)
    free_attrs, free_pos = layout.generation_layout(0, g, s)
    rows = 2 * b if guided else b
    q_attrs = TokenAttrs(*(_rows(a, b) for a in cond_attrs))
    q_pos = _rows(cond_pos, b)
    if guided:
        q_attrs = _stack_rows(q_attrs, TokenAttrs(*(_rows(a, b) for a in free_attrs)))
        q_pos = jnp.concatenate([q_pos, _rows(free_pos, b)], axis=0)

    if use_kv_cache:
        prefix = model.apply(
            variables,
            history,
            TokenAttrs(*(_rows(a, b) for a in hist_attrs)),
            _rows(hist_pos, b),
            method=VideoGPT.prefill,
        )
        prefix_attrs = TokenAttrs(*(_rows(a, b) for a in hist_attrs))
        if guided:  # the CFG rows reuse the same keys, all hidden from them as padding
            prefix_attrs = _stack_rows(
                prefix_attrs, prefix_attrs._replace(is_pad=jnp.ones_like(prefix_attrs.is_pad))
            )

        def predict(z, t):
            zz = jnp.concatenate([z, z], axis=0) if guided else z
            x1 = model.apply(
                variables,
                zz,
                jnp.full((rows, g), t),
                q_attrs,
                q_pos,
                prefix,
                prefix_attrs,
                method=VideoGPT.denoise,
            )
            return (x1[:b], x1[b:]) if guided else (x1, None)
    else:
        seq_attrs = TokenAttrs(
            *(_rows(jnp.concatenate([h, c]), b) for h, c in zip(hist_attrs, cond_attrs, strict=True))
        )
        seq_pos = _rows(jnp.concatenate([hist_pos, cond_pos]), b)

        def predict(z, t):
            tt = jnp.full((b, g), t)
            cond = model.apply(variables, history, z, tt, seq_attrs, seq_pos, method=VideoGPT.sequence)
            if not guided:
                return cond, None
            free = model.apply(
                variables,
                z,
                tt,
                TokenAttrs(*(_rows(a, b) for a in free_attrs)),
                _rows(free_pos, b),
                None,
                None,
                method=VideoGPT.denoise,
            )
            return cond, free

    def guided_x1(z, t):
        cond, free = predict(z, t)
        return flow.guide(cond, free, cfg_scale) if guided else cond

    return _euler_loop(guided_x1, sigmas, noise)


def _euler_loop(predict: Callable[[jax.Array, jax.Array], jax.Array], sigmas: jax.Array, noise: jax.Array):
    """The Euler loop over ``sigmas`` (steps + 1,) from ``noise`` at t = 0, one ``fori_loop``;
    ``predict(z, t)`` gives the guided x1."""

    def euler_step(i, z):
        t = sigmas[i]
        return z + (sigmas[i + 1] - t) * flow.velocity(predict(z, t), z, t)

    return jax.lax.fori_loop(0, sigmas.shape[0] - 1, euler_step, noise.astype(jnp.float32))


def round_sizes(
    context_frames: int, num_frames: int, clip_frames: int, window_frames: int
) -> list[tuple[int, int]]:
    """(history frames kept, frames generated) of each round of :meth:`Sampler.rollout`: clips of
    ``clip_frames`` (the last one shorter), each after the last ``window_frames − g`` frames."""
    out, made = [], 0
    while made < num_frames:
        g = min(clip_frames, num_frames - made)
        out.append((min(context_frames + made, window_frames - g), g))
        made += g
    return out


class Sampler:
    """Video prediction from conditioning latents with the settings of ``config.sampling``."""

    def __init__(self, config: ml_collections.ConfigDict, model: VideoGPT):
        self.config = config
        self.model = model
        s = config.sampling
        # public, so that its memory can be read from abstract inputs (tools/sample_memory.py)
        self.jitted_sample_clip = jax.jit(
            functools.partial(
                sample_clip,
                model,
                steps=s.steps,
                cfg_scale=s.cfg_scale,
                shift=s.shift,
                use_kv_cache=s.use_kv_cache,
                condition_scale=s.condition_scale,
            )
        )

    def sample_clip(
        self, params, history: jax.Array, noise: jax.Array, condition: jax.Array | None = None
    ) -> jax.Array:
        """One clip; see :func:`sample_clip`."""
        return self.jitted_sample_clip(params, history, noise, condition)

    def rollout(
        self,
        params,
        context: jax.Array,
        num_frames: int,
        key: jax.Array | None = None,
        reencode: Callable[[jax.Array], jax.Array] | None = None,
        progress: bool = False,
        condition: jax.Array | None = None,
    ) -> jax.Array:
        """Predicts ``num_frames`` frames after ``context`` (B, n0, h, w, C), clip by clip.

        Each round keeps the last ``window_frames − g`` frames as history. ``reencode`` maps a
        generated clip's latents to the history latents (the official sampler decodes to uint8
        and re-encodes with the tokenizer); without it the latents are reused as they are.
        ``condition``: ids of every row's condition (see :func:`sample_clip`), the same each round.
        Returns (B, num_frames, h, w, C).
        """
        s = self.config.sampling
        key = jax.random.key(s.seed) if key is None else key
        # the same initial noise every round, as the release re-seeds its generator per round
        round_noise = jax.random.normal(
            key, (context.shape[0], s.clip_frames, *context.shape[2:]), jnp.float32
        )
        frames, made = context, []
        sizes = round_sizes(context.shape[1], num_frames, s.clip_frames, s.window_frames)
        with tqdm(total=num_frames, desc="sampling", unit="frame", disable=not progress) as bar:
            for round_index, (kept, g) in enumerate(sizes):
                history = frames[:, frames.shape[1] - kept :]
                round_key = jax.random.fold_in(key, round_index)
                if s.history_noise > 0 and round_index > 0:
                    a = s.history_noise
                    eps = jax.random.normal(jax.random.fold_in(round_key, 1), history.shape, history.dtype)
                    history = (1 - a) * history + a * eps
                clip = self.sample_clip(params, history, round_noise[:, :g], condition)
                clip = reencode(clip) if reencode is not None else clip
                made.append(clip)
                frames = jnp.concatenate([frames, clip.astype(frames.dtype)], axis=1)
                bar.update(g)
        return jnp.concatenate(made, axis=1)
