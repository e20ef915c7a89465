"""Import a diffusers-format ``AutoencoderKL`` folder (the SDXL VAE) into the clip tokenizer.

The folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``; reading needs the
``safetensors`` package only (its NumPy API), not torch. Names and layouts follow the table in
:mod:`vgpt_jax.models.clip_tokenizer`. Every tensor the config implies must be present with its
shape, and no other tensor may be: anything else is a ``ValueError`` naming the tensor.
"""

from __future__ import annotations

import json
import pathlib
import re

import flax
import numpy as np

from vgpt_jax.models.clip_tokenizer import TokenizerConfig, abstract_params

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# config.json entries we read, and the values of entries that select an architecture we build.
_REQUIRED = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "scaling_factor")
_FIXED = {
    "act_fn": "silu",
    "mid_block_add_attention": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "shift_factor": None,  # the release's latents are only scaled (spec §2)
    "latents_mean": None,
    "latents_std": None,
}
_BLOCK_TYPES = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}

# Our module names -> diffusers' (whole path segments).
_SEGMENTS = (
    (re.compile(r"down_(\d+)"), r"down_blocks.\1"),
    (re.compile(r"up_(\d+)"), r"up_blocks.\1"),
    (re.compile(r"resnet_(\d+)"), r"resnets.\1"),
    (re.compile(r"mid"), "mid_block"),
    (re.compile(r"attention"), "attentions.0"),
    (re.compile(r"downsample"), "downsamplers.0"),
    (re.compile(r"upsample"), "upsamplers.0"),
    (re.compile(r"norm_out"), "conv_norm_out"),
    (re.compile(r"shortcut"), "conv_shortcut"),
    (re.compile(r"norm"), "group_norm"),  # only the attention's norm is named exactly "norm"
    (re.compile(r"query"), "to_q"),
    (re.compile(r"key"), "to_k"),
    (re.compile(r"value"), "to_v"),
    (re.compile(r"out"), "to_out.0"),
)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# Checkpoints saved before diffusers renamed its attention projections.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_PATTERN = re.compile(r"\.attentions\.0\.(query|key|value|proj_attn)\.")


def read_config(folder: str | pathlib.Path, chunk_frames: int = 8) -> TokenizerConfig:
    """The tokenizer hyper-parameters of a diffusers ``config.json``; unsupported variants raise."""
    path = pathlib.Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a diffusers AutoencoderKL folder")
    raw = json.loads(path.read_text())
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing entries {missing}")
    for key, value in _FIXED.items():
        if raw.get(key, value) != value:
            raise ValueError(f"{path}: {key} = {raw[key]!r} is not supported (expected {value!r})")
    for key, value in _BLOCK_TYPES.items():
        bad = [t for t in raw.get(key, ()) if t != value]
        if bad:
            raise ValueError(f"{path}: {key} contains {bad}; only {value} is supported")
    if raw.get("out_channels", 3) != raw.get("in_channels", 3):
        raise ValueError(
            f"{path}: in_channels = {raw.get('in_channels')} and out_channels = {raw.get('out_channels')} "
            "differ; the tokenizer reconstructs its input"
        )
    return TokenizerConfig(
        in_channels=raw.get("in_channels", 3),
        block_out_channels=tuple(raw["block_out_channels"]),
        layers_per_block=raw["layers_per_block"],
        latent_channels=raw["latent_channels"],
        norm_num_groups=raw["norm_num_groups"],
        scaling_factor=raw["scaling_factor"],
        chunk_frames=chunk_frames,
    )


def read_tensors(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors file, by its (modern) diffusers name."""
    from safetensors.numpy import load_file

    path = pathlib.Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a diffusers AutoencoderKL folder")
    tensors = load_file(str(path))
    return {
        _LEGACY_PATTERN.sub(lambda m: f".attentions.0.{_LEGACY_ATTENTION[m[1]]}.", k): v
        for k, v in tensors.items()
    }


def diffusers_name(path: tuple[str, ...]) -> str:
    """Our parameter path, e.g. ('encoder', 'down_1', 'resnet_0', 'conv1', 'kernel') -> its tensor name."""
    *modules, leaf = path
    renamed = []
    for segment in modules:
        for pattern, replacement in _SEGMENTS:
            if pattern.fullmatch(segment):
                segment = pattern.sub(replacement, segment)
                break
        renamed.append(segment)
    return ".".join([*renamed, _LEAVES[leaf]])


def _torch_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the diffusers tensor for one of ours: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))


def _from_torch(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_torch_layout` on the values, cast to fp32."""
    axes = (2, 3, 1, 0) if array.ndim == 4 else tuple(reversed(range(array.ndim)))
    return np.ascontiguousarray(np.transpose(array, axes), dtype=np.float32)


def params_from_tensors(tensors: dict[str, np.ndarray], cfg: TokenizerConfig, source: str = "weights"):
    """Our parameter tree (fp32 NumPy) from diffusers tensors that must match ``cfg`` exactly."""
    abstract = abstract_params(cfg)
    flat = flax.traverse_util.flatten_dict(abstract)
    params, missing = {}, []
    for path, leaf in flat.items():
        name = diffusers_name(path)
        if name not in tensors:
            missing.append(name)
            continue
        expected, found = _torch_layout(leaf.shape), tuple(tensors[name].shape)
        if found != expected:
            raise ValueError(
                f"{source}: tensor '{name}' has shape {found}, but the config "
                f"(block_out_channels={cfg.block_out_channels}, layers_per_block={cfg.layers_per_block}, "
                f"latent_channels={cfg.latent_channels}) needs {expected}"
            )
        params[path] = _from_torch(tensors[name])
    expected_names = {diffusers_name(p) for p in flat}
    unexpected = sorted(set(tensors) - expected_names)
    if missing or unexpected:
        raise ValueError(
            f"{source}: the tensors do not match the config: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all), unexpected "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)"
        )
    return flax.traverse_util.unflatten_dict(params)


def import_vae(folder: str | pathlib.Path, chunk_frames: int = 8) -> tuple[TokenizerConfig, dict]:
    """(config, params) of a diffusers AutoencoderKL folder."""
    cfg = read_config(folder, chunk_frames)
    source = str(pathlib.Path(folder) / WEIGHTS_FILE)
    return cfg, params_from_tensors(read_tensors(folder), cfg, source)
