"""A random-weight official Video-GPT folder with the release's sizes, to time ``vgpt convert``.

    python -m vgpt_jax.tools.release_folder OUT [--dtype bfloat16] [--vae] [--num-layers 32]

The weights are drawn and written one tensor at a time (the largest, the 394 MB fp32 embedding
table, bounds the memory), so writing the 3.76 B folder needs no more than a few GB of host
memory. ``pos_embed`` is the true table (the converter checks it); the token ids are
``base_config()``'s placeholders, written to the tokenizer files. ``--vae`` adds a randomly
initialised SDXL-sized diffusers ``AutoencoderKL`` under ``vae/`` (needs torch and diffusers).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from vgpt_jax import config as config_lib
from vgpt_jax.convert import official


def write_release_folder(
    folder: str | Path,
    config: ml_collections.ConfigDict | None = None,
    dtype: str = "float32",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Writes config.json, the tokenizer files and a random model.safetensors for ``config``
    (default: the release, ``base_config()``). Weights ~ N(0, 0.02²) as Phi-3's init, norms 1."""
    config = config_lib.validate(config_lib.base_config() if config is None else config)
    official.check_official(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    official.write_metadata(folder, config, dtype)
    rng = np.random.default_rng(seed)  # the writer asks for the tensors in file order: reproducible

    def make(slot: official.Slot, shape: tuple[int, ...]) -> np.ndarray:
        if slot.path[-1] == "scale":  # RMSNorm weights
            return np.ones(shape, np.float32)
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    entries = official.tensor_entries(
        config, np.dtype(dtype), make
    )  # official imports ml_dtypes: bfloat16 is known
    official.write_safetensors(folder / official.WEIGHTS_FILE, entries, progress)
    return folder


def write_random_vae(folder: str | Path, seed: int = 0) -> Path:
    """A randomly initialised diffusers AutoencoderKL with the SDXL VAE's sizes under ``folder``."""
    import torch
    from diffusers import AutoencoderKL

    from vgpt_jax.models.clip_tokenizer import base_tokenizer_config

    t = base_tokenizer_config()
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=t.in_channels,
        out_channels=t.in_channels,
        down_block_types=("DownEncoderBlock2D",) * len(t.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(t.block_out_channels),
        block_out_channels=tuple(t.block_out_channels),
        layers_per_block=t.layers_per_block,
        latent_channels=t.latent_channels,
        norm_num_groups=t.norm_num_groups,
        scaling_factor=t.scaling_factor,
    )
    vae.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vgpt_jax.tools.release_folder", description=__doc__)
    parser.add_argument("output", help="the folder to write")
    parser.add_argument("--dtype", default="float32", choices=official.DTYPES)
    parser.add_argument(
        "--num-layers", type=int, default=None, help="fewer layers for a quick try (default 32)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae", action="store_true", help="also write a random SDXL-sized vae/")
    args = parser.parse_args(argv)
    config = config_lib.base_config()
    if args.num_layers is not None:
        config.model.num_layers = args.num_layers
    folder = write_release_folder(args.output, config, args.dtype, args.seed)
    if args.vae:
        write_random_vae(folder / official.VAE_DIR, args.seed)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
