"""float64 NumPy references written from the spec (§3–§5), shared by the model and converter tests.

Nothing here calls the library: weights come in the official (torch) layout as a dict ``W``
(see :func:`ref_forward`), and every formula is the spec's, in float64.
"""

from __future__ import annotations

import math

import numpy as np


def ref_sincos_1d(dim: int, pos) -> np.ndarray:
    """E_D(p) = [sin(p·ω_0..ω_{D/2−1}), cos(p·ω)], ω_m = 10000^(−m/(D/2)); pos (...) -> (..., D)."""
    omega = 10000.0 ** (-np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    a = np.asarray(pos, np.float64)[..., None] * omega
    return np.concatenate([np.sin(a), np.cos(a)], axis=-1)


def ref_grid_coord(index, grid: int, base: int) -> np.ndarray:
    """Grid coordinate index / (grid/base), computed in float32 as the official table (spec §3.3)."""
    return (np.asarray(index, np.float32) / np.float32(grid / base)).astype(np.float64)


def ref_pos_cells(dim: int, grid: int, base: int, rows, cols) -> np.ndarray:
    """Table cells (row i, col j) = [E_{D/2}(j/s), E_{D/2}(i/s)] (first half: the column)."""
    i, j = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
    return np.concatenate(
        [
            ref_sincos_1d(dim // 2, ref_grid_coord(j, grid, base)),
            ref_sincos_1d(dim // 2, ref_grid_coord(i, grid, base)),
        ],
        axis=-1,
    )


def ref_centre_crop(dim: int, grid: int, base: int, h_tok: int, w_tok: int) -> np.ndarray:
    """Centre crop top = (grid−h')//2, left = (grid−w')//2, tokens row-major -> (h'·w', D)."""
    top, left = (grid - h_tok) // 2, (grid - w_tok) // 2
    rr, cc = np.meshgrid(np.arange(top, top + h_tok), np.arange(left, left + w_tok), indexing="ij")
    return ref_pos_cells(dim, grid, base, rr.reshape(-1), cc.reshape(-1))


def ref_timestep_features(t, dim: int = 256) -> np.ndarray:
    """[cos(t·f), sin(t·f)], f_k = exp(−ln(10000)·k/(dim/2)), t raw in [0, 1] (spec §3.2)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    a = np.asarray(t, np.float64)[..., None] * freqs
    return np.concatenate([np.cos(a), np.sin(a)], axis=-1)


def ref_conv_patch_embed(x_hwc: np.ndarray, w_torch: np.ndarray, bias: np.ndarray, p: int) -> np.ndarray:
    """torch Conv2d(C→D, k=p, s=p) on one channels-last frame, weight (D, C, p, p) -> (h'·w', D) row-major."""
    h, w, _ = x_hwc.shape
    out = []
    for i in range(h // p):
        for j in range(w // p):
            window = x_hwc[i * p : (i + 1) * p, j * p : (j + 1) * p, :]  # (a, b, c)
            out.append(np.einsum("dcab,abc->d", w_torch, window) + bias)
    return np.stack(out)


def ref_unpatchify(tokens: np.ndarray, p: int, h: int, w: int) -> np.ndarray:
    """(S, p·p·C) -> (h, w, C): output feature (a·p + b)·C + c goes to pixel (p·i + a, p·j + b), channel c."""
    c = tokens.shape[-1] // (p * p)
    out = np.zeros((h, w, c), tokens.dtype)
    for i in range(h // p):
        for j in range(w // p):
            tok = tokens[i * (w // p) + j]
            for a in range(p):
                for b in range(p):
                    out[p * i + a, p * j + b, :] = tok[(a * p + b) * c : (a * p + b + 1) * c]
    return out


def ref_inv_freq(head_dim: int, theta: float, factors) -> np.ndarray:
    j = np.arange(head_dim // 2, dtype=np.float64)
    f = np.ones_like(j) if factors is None else np.asarray(factors, np.float64)
    return 1.0 / (f * theta ** (2 * j / head_dim))


def ref_rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def ref_rope(x: np.ndarray, positions, inv_freq: np.ndarray, mscale: float) -> np.ndarray:
    """NeoX rotate-half RoPE on explicit ids; x (T, H, Dh), positions (T,)."""
    ang = np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]
    ang = np.concatenate([ang, ang], axis=-1)[:, None, :]
    return x * (np.cos(ang) * mscale) + ref_rotate_half(x) * (np.sin(ang) * mscale)


def silu(x):
    return x / (1.0 + np.exp(-x))


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


CLEAN_K, NOISY_K = "C", "N"


def ref_visible(kind, frame, clip, order, is_pad=None) -> np.ndarray:
    """Spec §5.1 for token lists (kind in {'C','N'}) -> bool (T, T), [query, key]."""
    kind = np.asarray(kind)
    frame, clip, order = (np.asarray(a) for a in (frame, clip, order))
    qn, kn = (kind == NOISY_K)[:, None], (kind == NOISY_K)[None, :]
    qf, kf, qk, kk = frame[:, None], frame[None, :], clip[:, None], clip[None, :]
    qo, ko = order[:, None], order[None, :]
    key_clean = ~kn & ((~qn & ((kf < qf) | ((kf == qf) & (ko <= qo)))) | (qn & (kk < qk)))
    key_noisy = kn & qn & (kk == qk) & (ko <= qo)
    rule = key_clean | key_noisy
    if is_pad is None:
        return rule
    pad = np.asarray(is_pad, bool)
    return pad[:, None] | (~pad[None, :] & rule)


def official_training_blocks(partition):
    """[N(clip 1)][C(clip 1)]…[N(clip K)] at frame granularity: list of (kind, frame, clip)."""
    blocks, start = [], 0
    for k, size in enumerate(partition):
        frames = range(start, start + size)
        blocks += [(NOISY_K, f, k) for f in frames]
        if k != len(partition) - 1:
            blocks += [(CLEAN_K, f, k) for f in frames]
        start += size
    return blocks


def block_tokens(blocks, s: int):
    """Per-token (kind, frame, clip, order, position) of a block list (spec §4.2–4.3)."""
    block_len = s + 2
    kind, frame, clip, order, pos = [], [], [], [], []
    for kd, f, k in blocks:
        o = [0, 1] + [2] * s if kd == NOISY_K else [0] + [1] * s + [2]
        kind += [kd] * block_len
        frame += [f] * block_len
        clip += [k] * block_len
        order += o
        pos += [f * block_len + i for i in range(block_len)]
    return kind, np.array(frame), np.array(clip), np.array(order), np.array(pos)


def ref_timestep_mlp(w, t):
    h = silu(ref_timestep_features(t) @ w["w0"].T + w["b0"])
    return h @ w["w2"].T + w["b2"]


def ref_forward(W, m, blocks, noisy, clean, t, rope, *, variant: str = "spec"):
    """float64 forward of the official sequence of ``blocks``.

    noisy / clean: per global frame (h, w, C) latents; t: per frame. rope = (inv_freq, mscale).
    Returns {frame: x1 prediction (h, w, C)} for every noisy block. ``variant`` deliberately breaks
    one rule (to show the comparison has teeth): 'see_own_clean' lets a noisy clip see the clean copy
    of its own clip; 'clean_pos_as_noisy' gives clean patches the noisy patches' positions.
    """
    p = m.patch_size
    h, w, _ = next(iter(noisy.values())).shape
    s = (h // p) * (w // p)
    pe = ref_centre_crop(m.hidden_size, m.pos_embed_max_size, m.pos_embed_base_size, h // p, w // p)
    emb = W["embed_tokens"]
    x = []
    for kd, f, _ in blocks:
        if kd == NOISY_K:
            patches = ref_conv_patch_embed(noisy[f], *W["x_embedder"], p) + pe
            time = ref_timestep_mlp(W["time_token"], t[f])
            x += [emb[m.token_diffusion], time, *patches]
        else:
            patches = ref_conv_patch_embed(clean[f], *W["input_x_embedder"], p) + pe
            x += [emb[m.token_image_start], *patches, emb[m.token_image_end]]
    x = np.stack(x)
    kind, frame, clip, order, pos = block_tokens(blocks, s)
    if variant == "clean_pos_as_noisy":
        pos = pos + ((np.asarray(kind) == CLEAN_K) & (order == 1))
    mask = ref_visible(kind, frame, clip, order)
    if variant == "see_own_clean":
        clip_q, clip_k = clip[:, None], clip[None, :]
        own = (
            (np.asarray(kind)[:, None] == NOISY_K)
            & (np.asarray(kind)[None, :] == CLEAN_K)
            & (clip_k == clip_q)
        )
        mask = mask | own
    inv_freq, mscale = rope
    nh, hd = m.num_heads, m.hidden_size // m.num_heads
    for lw in W["layers"]:
        hid = rms_norm(x, lw["input_layernorm"], m.rms_norm_eps)
        qkv = hid @ lw["qkv_proj"].T
        q, k, v = (a.reshape(len(x), nh, hd) for a in np.split(qkv, 3, axis=-1))
        q, k = ref_rope(q, pos, inv_freq, mscale), ref_rope(k, pos, inv_freq, mscale)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        scores = np.where(mask[None], scores, -np.inf)
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", probs, v).reshape(len(x), -1)
        x = x + att @ lw["o_proj"].T
        hid = rms_norm(x, lw["post_attention_layernorm"], m.rms_norm_eps)
        gate, up = np.split(hid @ lw["gate_up_proj"].T, 2, axis=-1)
        x = x + (up * silu(gate)) @ lw["down_proj"].T
    x = rms_norm(x, W["norm"], m.rms_norm_eps)
    out, block_len = {}, s + 2
    for b, (kd, f, _) in enumerate(blocks):
        if kd != NOISY_K:
            continue
        tok = x[b * block_len + 2 : (b + 1) * block_len]
        cond = ref_timestep_mlp(W["t_embedder"], t[f])
        mod = silu(cond) @ W["adaLN"][0].T + W["adaLN"][1]
        shift, scale = mod[: m.hidden_size], mod[m.hidden_size :]
        ln = (tok - tok.mean(-1, keepdims=True)) / np.sqrt(tok.var(-1, keepdims=True) + m.final_norm_eps)
        y = (ln * (1 + scale) + shift) @ W["linear"][0].T + W["linear"][1]
        out[f] = ref_unpatchify(y, p, h, w)
    return out


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
