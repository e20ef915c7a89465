"""The official Video-GPT model folder <-> our parameters (``vgpt convert``).

The folder holds

* ``config.json``: a Phi-3 config (sizes, ``rms_norm_eps``, ``rope_theta``, ``rope_scaling``);
* ``model.safetensors``: the ``LVM`` state dict, fp32, bf16 or fp16, including the ``pos_embed`` buffer;
* tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), the
  only source of the ids of ``<|diffusion|>``, ``<img>``, ``</img>`` and the pad token;
* optionally ``vae/``, a diffusers ``AutoencoderKL`` folder (the clip tokenizer).

Tensor names and layouts follow the table in :mod:`vgpt_jax.models.video_gpt`. Reading uses the
``safetensors`` NumPy API (no torch) one tensor at a time, straight into preallocated parameter
arrays, so the host holds the parameters plus one tensor; writing streams the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax
import ml_collections
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from vgpt_jax import config as config_lib
from vgpt_jax.models.video_gpt import abstract_params
from vgpt_jax.nn.embeddings import sincos_2d_table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
VAE_DIR = "vae"
POS_EMBED = "pos_embed"
# config.model.tokens field -> the marker token's text in the release tokenizer.
MARKERS = {"diffusion": "<|diffusion|>", "image_start": "<img>", "image_end": "</img>"}
# Written as the pad token's text when we write tokenizer files (Phi-3's pad token); reading
# takes whatever text the folder's files name.
PAD_TEXT = "<|endoftext|>"
# Hyper-parameters the official LVM class fixes in code (not in config.json): a config that
# changes them cannot be written as an official folder.
LVM_CONSTANTS = {
    "final_norm_eps": 1e-6,
    "latent_channels": 4,
    "patch_size": 2,
    "pos_embed_max_size": 192,
    "pos_embed_base_size": 64,
    "time_embed_dim": 256,
}
# config.json keys -> config.model fields, with Phi-3's defaults where transformers has one.
_PHI3_REQUIRED = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "mlp_dim",
    "vocab_size": "vocab_size",
    "rms_norm_eps": "rms_norm_eps",
}
_ROPE_KEYS = {
    "type",
    "rope_type",
    "short_factor",
    "long_factor",
    "rope_theta",
    "original_max_position_embeddings",
}
_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
}
DTYPES = ("float32", "bfloat16", "float16")


# =============================================================================================
# the tensor table
# =============================================================================================


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One official tensor and the parameter it becomes.

    ``layout``: 'same' (identical array), 'conv' (torch (D, C, p, p) = our (p, p, C, D) permuted
    (3, 2, 0, 1)) or 'linear' (torch (out, in) = our kernel reshaped to (in, out), transposed; the
    first ``in_dims`` axes of our kernel are torch's input).
    """

    name: str  # per-layer names contain '{i}'
    path: tuple[str, ...]  # per-layer paths are relative to a decoder layer
    layout: str = "same"
    in_dims: int = 1


def _timestep_mlp(official: str, ours: str) -> tuple[Mapping, ...]:
    return tuple(
        Mapping(
            f"{official}.mlp.{index}.{leaf}", (ours, fc, our_leaf), "linear" if leaf == "weight" else "same"
        )
        for index, fc in ((0, "fc1"), (2, "fc2"))
        for leaf, our_leaf in (("weight", "kernel"), ("bias", "bias"))
    )


TOP_LEVEL = (
    Mapping("llm.embed_tokens.weight", ("embed_tokens", "embedding")),
    Mapping("llm.norm.weight", ("backbone", "norm", "scale")),
    Mapping("x_embedder.proj.weight", ("x_embedder", "kernel"), "conv"),
    Mapping("x_embedder.proj.bias", ("x_embedder", "bias")),
    Mapping("input_x_embedder.proj.weight", ("input_x_embedder", "kernel"), "conv"),
    Mapping("input_x_embedder.proj.bias", ("input_x_embedder", "bias")),
    *_timestep_mlp("time_token", "time_token"),
    *_timestep_mlp("t_embedder", "t_embedder"),
    Mapping("final_layer.adaLN_modulation.1.weight", ("final_layer", "modulation", "kernel"), "linear"),
    Mapping("final_layer.adaLN_modulation.1.bias", ("final_layer", "modulation", "bias")),
    Mapping("final_layer.linear.weight", ("final_layer", "linear", "kernel"), "linear"),
    Mapping("final_layer.linear.bias", ("final_layer", "linear", "bias")),
)
PER_LAYER = (
    Mapping("llm.layers.{i}.input_layernorm.weight", ("input_norm", "scale")),
    Mapping("llm.layers.{i}.self_attn.qkv_proj.weight", ("attention", "qkv"), "linear"),
    Mapping("llm.layers.{i}.self_attn.o_proj.weight", ("attention", "out"), "linear", in_dims=2),
    Mapping("llm.layers.{i}.post_attention_layernorm.weight", ("post_attention_norm", "scale")),
    Mapping("llm.layers.{i}.mlp.gate_up_proj.weight", ("mlp", "gate_up"), "linear"),
    Mapping("llm.layers.{i}.mlp.down_proj.weight", ("mlp", "down"), "linear"),
)


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one official tensor lives: ``params[path]`` or, in a scanned stack, ``params[path][index]``."""

    name: str
    mapping: Mapping
    path: tuple[str, ...]
    index: int | None


def slots(config: ml_collections.ConfigDict) -> list[Slot]:
    """Every official tensor but ``pos_embed``, in file order (top level, then layer by layer)."""
    m = config.model
    out = [Slot(t.name, t, t.path, None) for t in TOP_LEVEL]
    for i in range(m.num_layers):
        for t in PER_LAYER:
            if m.scan_layers:
                out.append(Slot(t.name.format(i=i), t, ("backbone", "layers", *t.path), i))
            else:
                out.append(Slot(t.name.format(i=i), t, ("backbone", f"layers_{i}", *t.path), None))
    return out


def official_shape(mapping: Mapping, ours: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of the official tensor whose parameter (one layer's) has shape ``ours``."""
    if mapping.layout == "conv":
        return (ours[3], ours[2], ours[0], ours[1])
    if mapping.layout == "linear":
        return (math.prod(ours[mapping.in_dims :]), math.prod(ours[: mapping.in_dims]))
    return tuple(ours)


def _fill(target: np.ndarray, mapping: Mapping, tensor: np.ndarray) -> None:
    """Writes an official tensor into our (contiguous, preallocated) parameter slot, casting to its dtype."""
    if mapping.layout == "conv":
        target[...] = tensor.transpose(2, 3, 1, 0)
    elif mapping.layout == "linear":
        target.reshape(tensor.shape[1], tensor.shape[0])[...] = tensor.T  # a view: no extra copy
    else:
        target[...] = tensor


def to_official(mapping: Mapping, param: np.ndarray) -> np.ndarray:
    """Our parameter (one layer's) -> the official tensor's values (a view where possible)."""
    if mapping.layout == "conv":
        return param.transpose(3, 2, 0, 1)
    if mapping.layout == "linear":
        return param.reshape(math.prod(param.shape[: mapping.in_dims]), -1).T
    return param


def pos_embed_table(config: ml_collections.ConfigDict) -> np.ndarray:
    """The ``pos_embed`` buffer the official model registers: (1, G·G, D) float32."""
    m = config.model
    table = sincos_2d_table(m.hidden_size, m.pos_embed_max_size, m.pos_embed_base_size)
    return table.reshape(1, -1, m.hidden_size)


# =============================================================================================
# config.json and the tokenizer files
# =============================================================================================


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected an official Video-GPT model folder")
    with open(path) as f:
        return json.load(f)


def _text(entry: Any) -> str | None:
    """A special-token entry of the tokenizer files: a string or {"content": string}."""
    return entry.get("content") if isinstance(entry, dict) else entry


def _vocabulary(folder: Path) -> dict[str, int]:
    """Token text -> id from the tokenizer files present; added tokens override the base vocabulary."""
    vocab: dict[str, int] = {}
    tokenizer = folder / TOKENIZER_JSON
    if tokenizer.is_file():
        data = _read_json(tokenizer)
        base = (data.get("model") or {}).get("vocab")
        if isinstance(base, dict):  # BPE / WordPiece: {text: id}
            vocab.update(base)
        elif isinstance(base, list):  # Unigram: [[text, score], ...], the id is the index
            vocab.update({entry[0]: i for i, entry in enumerate(base)})
        vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", ())})
    tokenizer_config = folder / TOKENIZER_CONFIG
    if tokenizer_config.is_file():
        decoder = _read_json(tokenizer_config).get("added_tokens_decoder", {})
        vocab.update({_text(entry): int(i) for i, entry in decoder.items()})
    return vocab


def _pad_text(folder: Path) -> str | None:
    for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        if (folder / name).is_file():
            text = _text(_read_json(folder / name).get("pad_token"))
            if text is not None:
                return text
    return None


def token_ids(folder: str | Path) -> dict[str, int]:
    """Ids of the marker tokens and the pad token, keyed by ``config.model.tokens`` field.

    Raises FileNotFoundError without tokenizer files, ValueError if a token is not one token there.
    """
    folder = Path(folder)
    files = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
    if not any((folder / f).is_file() for f in files):
        raise FileNotFoundError(
            f"{folder} has none of the tokenizer files {files}: the token ids come from them"
        )
    vocab = _vocabulary(folder)
    texts = dict(MARKERS, pad=_pad_text(folder))
    if texts["pad"] is None:
        raise ValueError(f"{folder}: no pad_token in {SPECIAL_TOKENS_MAP} or {TOKENIZER_CONFIG}")
    missing = {field: text for field, text in texts.items() if text not in vocab}
    if missing:
        raise ValueError(
            f"{folder}: the tokenizer files {files} have no single token for {sorted(missing.values())}; "
            "the release's tokenizer adds each of them as one token"
        )
    return {field: vocab[text] for field, text in texts.items()}


def _rope_section(raw: dict, path: Path) -> tuple[dict | None, float]:
    """(rope scaling dict or None, theta) from either config.json convention (transformers < 5 / >= 5)."""
    rope = raw.get("rope_scaling") or raw.get("rope_parameters")
    theta = float(raw.get("rope_theta", (rope or {}).get("rope_theta", 10000.0)))
    kind = None if rope is None else rope.get("type", rope.get("rope_type"))
    if kind in (None, "default"):
        return None, theta
    if kind not in ("su", "longrope"):
        raise ValueError(f"{path}: rope scaling type {kind!r} is not supported (expected 'longrope' or 'su')")
    unknown = sorted(set(rope) - _ROPE_KEYS)
    if unknown:
        raise ValueError(
            f"{path}: rope scaling entries {unknown} are not supported (only {sorted(_ROPE_KEYS)})"
        )
    return rope, theta


def read_config(folder: str | Path) -> ml_collections.ConfigDict:
    """Our config for an official folder: config.json's Phi-3 fields and the tokenizer's ids on top of
    :func:`vgpt_jax.config.base_config` (whose other fields are the LVM class's fixed values)."""
    path = Path(folder) / CONFIG_FILE
    raw = _read_json(path)
    missing = [key for key in _PHI3_REQUIRED if key not in raw]
    if missing:
        raise ValueError(f"{path}: missing entries {missing}")
    checks = {"hidden_act": "silu", "partial_rotary_factor": 1.0, "attention_bias": False, "mlp_bias": False}
    for key, value in checks.items():
        if raw.get(key, value) != value:
            raise ValueError(f"{path}: {key} = {raw[key]!r} is not supported (expected {value!r})")
    config = config_lib.base_config()
    m = config.model
    for key, field in _PHI3_REQUIRED.items():
        setattr(m, field, type(getattr(m, field))(raw[key]))
    m.num_kv_heads = int(raw.get("num_key_value_heads") or raw["num_attention_heads"])
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim * m.num_heads != m.hidden_size:
        raise ValueError(
            f"{path}: head_dim = {head_dim} but hidden_size / num_attention_heads = "
            f"{m.hidden_size // m.num_heads}"
        )
    rope, m.rope.theta = _rope_section(raw, path)
    m.rope.max_position_embeddings = int(raw.get("max_position_embeddings", 4096))
    if rope is None:
        m.rope.factors = "none"
    else:
        # the official attention asks for the long factors at every length (spec §3.1)
        m.rope.factors = "long"
        m.rope.long_factor = tuple(float(f) for f in rope["long_factor"])
        m.rope.short_factor = tuple(float(f) for f in rope["short_factor"])
        m.rope.original_max_position_embeddings = int(
            raw.get("original_max_position_embeddings", rope.get("original_max_position_embeddings", 4096))
        )
    m.tokens.update(token_ids(folder))
    return config_lib.validate(config)


def check_official(config: ml_collections.ConfigDict) -> None:
    """ValueError if ``config`` has no official folder: LVM fixes some sizes, and uses long RoPE factors."""
    m = config.model
    for field, value in LVM_CONSTANTS.items():
        if getattr(m, field) != value:
            raise ValueError(
                f"config.model.{field} = {getattr(m, field)!r}: the official LVM class fixes it to "
                f"{value!r}, so this model has no official folder"
            )
    if m.rope.factors == "short":
        raise ValueError(
            "config.model.rope.factors = 'short': the official model always uses the long factors"
        )
    if config.lora.rank > 0:
        raise ValueError(
            f"config.lora.rank = {config.lora.rank}: an official folder holds no LoRA adapters; export the "
            "checkpoint with them merged into the weights first (`vgpt export` without --keep-adapter)"
        )
    if config.condition.kind != "none":
        raise ValueError(
            f"config.condition.kind = {config.condition.kind!r}: the official model has no condition path "
            "(DESIGN §8), so a conditioned model has no official folder"
        )


def phi3_config_json(config: ml_collections.ConfigDict, dtype: str) -> dict:
    """The config.json of an official folder for ``config`` (what :func:`read_config` reads back)."""
    m = config.model
    rope = None
    if m.rope.factors == "long":
        rope = {
            "type": "longrope",
            "long_factor": list(m.rope.long_factor),
            "short_factor": list(m.rope.short_factor),
        }
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "intermediate_size": m.mlp_dim,
        "vocab_size": m.vocab_size,
        "rms_norm_eps": m.rms_norm_eps,
        "hidden_act": "silu",
        "rope_theta": m.rope.theta,
        "rope_scaling": rope,
        "max_position_embeddings": m.rope.max_position_embeddings,
        "original_max_position_embeddings": m.rope.original_max_position_embeddings,
        "attention_dropout": 0.0,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "tie_word_embeddings": False,
        "pad_token_id": m.tokens.pad,
        "torch_dtype": dtype,
    }


def write_metadata(folder: Path, config: ml_collections.ConfigDict, dtype: str) -> None:
    """config.json and the tokenizer files that carry the token ids (not a whole tokenizer)."""
    tokens = config.model.tokens
    texts = dict(MARKERS, pad=PAD_TEXT)
    added = [
        {"id": getattr(tokens, field), "content": text, "special": True, "normalized": False}
        for field, text in texts.items()
    ]
    files = {
        CONFIG_FILE: phi3_config_json(config, dtype),
        TOKENIZER_JSON: {"version": "1.0", "added_tokens": added},
        TOKENIZER_CONFIG: {
            "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
            "pad_token": PAD_TEXT,
        },
        SPECIAL_TOKENS_MAP: {"pad_token": PAD_TEXT},
    }
    for name, content in files.items():
        with open(folder / name, "w") as f:
            json.dump(content, f, indent=2)


# =============================================================================================
# safetensors: checked reads, streamed writes
# =============================================================================================


def _check_names(source: str, what: str, expected: set[str], found: set[str]) -> None:
    """ValueError naming the missing and unexpected ``what`` (tensors, parameters) of ``source``."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the config: missing {what} {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all), unexpected {what} "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)"
        )


def _check_shape(source: str, name: str, expected: tuple[int, ...], found: Sequence[int]) -> None:
    if tuple(found) != tuple(expected):
        raise ValueError(
            f"{source}: '{name}' has shape {tuple(found)}, but the config needs {tuple(expected)}"
        )


def check_pos_embed(source: Path, tensor: np.ndarray, config: ml_collections.ConfigDict) -> None:
    """ValueError unless the stored ``pos_embed`` (1, G·G, D) is the recomputed 2-D sin-cos table
    to within its dtype's rounding (the buffer is never trusted: the model recomputes it)."""
    table = pos_embed_table(config)
    _check_shape(str(source), POS_EMBED, table.shape, tensor.shape)
    tol = float(ml_dtypes.finfo(tensor.dtype).eps)  # one unit of the stored dtype at magnitude 1
    worst = 0.0
    for start in range(0, table.shape[1], 4096):  # chunks: no full-size temporaries
        chunk = slice(start, start + 4096)
        worst = max(worst, float(np.max(np.abs(tensor[:, chunk].astype(np.float32) - table[:, chunk]))))
    if worst > tol:
        m = config.model
        raise ValueError(
            f"{source}: tensor '{POS_EMBED}' differs from the 2-D sin-cos table of hidden_size="
            f"{m.hidden_size}, grid {m.pos_embed_max_size}, base {m.pos_embed_base_size} by up to "
            f"{worst:.3g} (> {tol:.3g})"
        )


def _read_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor, with the file opened for it alone: safetensors maps the whole file, and the pages
    a read touches count as this process's memory until the mapping is closed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.get_tensor(name)


def read_weights(path: str | Path, config: ml_collections.ConfigDict, progress: bool = True) -> dict:
    """Our parameter tree (NumPy, ``config.model.param_dtype``) from an official ``model.safetensors``.

    Names, shapes and dtypes, and ``pos_embed``'s values, are all checked before any parameter is
    read; then the tensors are read one at a time into preallocated parameters (the scanned layer
    stacks are filled layer by layer).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the official weights file {WEIGHTS_FILE}")
    table = slots(config)
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    with safe_open(str(path), framework="np") as f:  # the header only
        _check_names(str(path), "tensors", {s.name for s in table} | {POS_EMBED}, set(f.keys()))
        for slot in table:
            ours = flat[slot.path].shape[1:] if slot.index is not None else flat[slot.path].shape
            info = f.get_slice(slot.name)
            _check_shape(str(path), slot.name, official_shape(slot.mapping, ours), info.get_shape())
            if info.get_dtype() not in _SAFETENSORS_DTYPES.values():
                raise ValueError(
                    f"{path}: tensor '{slot.name}' has dtype {info.get_dtype()}, not a float type"
                )
    check_pos_embed(path, _read_tensor(path, POS_EMBED), config)
    # np.empty touches no pages: memory grows only as the tensors are written in.
    params = {p: np.empty(a.shape, a.dtype) for p, a in flat.items()}
    for slot in tqdm(table, desc="reading tensors", unit="tensor", disable=not progress):
        target = params[slot.path] if slot.index is None else params[slot.path][slot.index]
        _fill(target, slot.mapping, _read_tensor(path, slot.name))
    return flax.traverse_util.unflatten_dict(params)


def write_safetensors(
    path: str | Path,
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]],
    progress: bool = True,
) -> None:
    """Writes a safetensors file tensor by tensor: ``entries`` are (name, shape, dtype, make), and
    ``make()`` is called only when its tensor is written, so one tensor is in memory at a time."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype, _ in entries:
        size = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, make in tqdm(
            entries, desc="writing tensors", unit="tensor", disable=not progress
        ):
            array = np.ascontiguousarray(make(), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"tensor '{name}' has shape {array.shape}, but {tuple(shape)} was announced")
            f.write(array.reshape(-1).view(np.uint8).data)


def tensor_entries(
    config: ml_collections.ConfigDict, dtype: Any, make: Callable[[Slot, tuple[int, ...]], np.ndarray]
) -> list[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]]:
    """The entries of an official ``model.safetensors`` for :func:`write_safetensors`.

    ``make(slot, shape)`` returns the official tensor of ``slot`` (shape = the official shape);
    ``pos_embed`` is the recomputed table.
    """
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    dtype = np.dtype(dtype)
    entries = []
    for slot in slots(config):
        ours = flat[slot.path].shape[1:] if slot.index is not None else flat[slot.path].shape
        shape = official_shape(slot.mapping, ours)
        entries.append((slot.name, shape, dtype, lambda s=slot, sh=shape: make(s, sh)))
    table = pos_embed_table(config)
    entries.append((POS_EMBED, table.shape, dtype, lambda: table))
    return entries


# =============================================================================================
# the public API and ``vgpt convert``
# =============================================================================================


def load(
    folder: str | Path, param_dtype: str | None = None, progress: bool = True
) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, params) of an official folder; params are NumPy arrays in ``param_dtype``
    (default: the config's, float32)."""
    folder = Path(folder)
    config = read_config(folder)
    if param_dtype is not None:
        config.model.param_dtype = param_dtype
    return config, read_weights(folder / WEIGHTS_FILE, config, progress)


def save(
    folder: str | Path,
    config: ml_collections.ConfigDict,
    params: dict,
    dtype: str | None = None,
    progress: bool = True,
) -> Path:
    """Writes the official folder of ``params`` (config.json, model.safetensors, tokenizer files).

    ``dtype``: of the written tensors (default: the parameters'). Returns the folder.
    """
    config = config_lib.validate(config)
    check_official(config)
    folder = Path(folder)
    flat = flax.traverse_util.flatten_dict(params)
    expected = flax.traverse_util.flatten_dict(abstract_params(config))
    _check_names(
        "the parameter tree", "parameters", {"/".join(p) for p in expected}, {"/".join(p) for p in flat}
    )
    for path, leaf in expected.items():
        _check_shape("the parameter tree", "/".join(path), leaf.shape, flat[path].shape)
    dtype = np.dtype(dtype or next(iter(flat.values())).dtype)
    folder.mkdir(parents=True, exist_ok=True)
    write_metadata(folder, config, dtype.name)

    def make(slot: Slot, shape: tuple[int, ...]) -> np.ndarray:
        param = flat[slot.path] if slot.index is None else flat[slot.path][slot.index]
        return to_official(slot.mapping, np.asarray(param))

    write_safetensors(folder / WEIGHTS_FILE, tensor_entries(config, dtype, make), progress)
    return folder


def import_folder(folder: str | Path, output: str | Path, param_dtype: str = "float32") -> str:
    """``vgpt convert --official``: the params-only checkpoint {"model", ["tokenizer"]} of a folder."""
    from vgpt_jax.checkpoint.params import save_params
    from vgpt_jax.convert.vae import import_vae
    from vgpt_jax.models.clip_tokenizer import base_tokenizer_config, with_weight_fields

    folder = Path(folder)
    config, params = load(folder, param_dtype)
    # NumPy all the way (read_weights and import_vae return NumPy): save_params writes NumPy arrays
    # from their own memory, so the peak host memory is the parameters' size (JAX arrays on a GPU
    # would be copied to the host all at once: README, "Performance")
    tree = {"model": params}
    if (folder / VAE_DIR).is_dir():
        tokenizer_cfg, tree["tokenizer"] = import_vae(folder / VAE_DIR)
        config.tokenizer = base_tokenizer_config()
        config = with_weight_fields(config, tokenizer_cfg)
    return save_params(output, tree, config)


def export_checkpoint(checkpoint: str | Path, output: str | Path, dtype: str | None = None) -> Path:
    """``vgpt convert --to-official``: the official folder of a params-only checkpoint's model."""
    from vgpt_jax.checkpoint.params import load_config, load_params

    config = load_config(checkpoint)
    tree = load_params(checkpoint)
    return save(output, config, tree.get("model", tree), dtype)
