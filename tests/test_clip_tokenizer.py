"""The clip tokenizer: parity with diffusers' AutoencoderKL, shapes, chunking and sharding, bad input,
saving and loading, and a short training run on synthetic-physics videos."""

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from conftest import load_experiment
from diffusers import AutoencoderKL as TorchAutoencoderKL
from safetensors.numpy import load_file, save_file

from data_pipelines.encode_latents import read_frames
from data_pipelines.pipeline import open_source
from vgpt_jax.checkpoint import tokenizer as tokenizer_ckpt
from vgpt_jax.convert import vae
from vgpt_jax.demo.synthetic_physics import write_training_set
from vgpt_jax.models import clip_tokenizer as ct
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train import tokenizer as tt

SCALING = 0.13025


def _rel(ours, reference) -> float:
    """Relative error ||a - b|| / ||b|| (Frobenius)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    """A small random diffusers AutoencoderKL saved to disk: three stages, two resnets each."""
    torch.manual_seed(0)
    model = TorchAutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=SCALING,
    ).eval()
    with torch.no_grad():  # GroupNorm starts at (1, 0): move it so its affine mapping is tested
        for name, tensor in model.state_dict().items():
            if "norm" in name:
                tensor.add_(0.3 * torch.randn_like(tensor))
    folder = tmp_path_factory.mktemp("vae")
    model.save_pretrained(folder)
    return folder, model


def test_parity_with_diffusers(diffusers_folder):
    """Posterior mean and std, and decode, match the PyTorch model to fp32 rel. error < 1e-4."""
    folder, model = diffusers_folder
    frames = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        dist = model.encode(frames).latent_dist
        decoded = model.decode(dist.mean).sample
    tok = tokenizer_ckpt.tokenizer_from_diffusers(folder)
    assert tok.cfg.scaling_factor == SCALING and tok.cfg.downsample_factor == 4

    mean, std = tok.posterior(_nhwc(frames))
    assert mean.shape == (3, 8, 12, 4)
    assert _rel(mean, _nhwc(dist.mean)) < 1e-4
    assert _rel(std, _nhwc(dist.std)) < 1e-4
    assert np.ptp(np.asarray(std)) > 0.5  # the std really varies, so the clamp and exp are exercised
    assert _rel(tok.decode(_nhwc(dist.mean), scaled=False), _nhwc(decoded)) < 1e-4
    # the scaled interface: the mean's latent is mean x scaling_factor, and decode undoes the scaling
    np.testing.assert_allclose(tok.encode(_nhwc(frames)), np.asarray(mean) * SCALING, rtol=1e-6)
    np.testing.assert_allclose(
        tok.decode(np.asarray(mean) * SCALING), tok.decode(mean, scaled=False), atol=2e-5
    )


def _tiny_tokenizer(chunk_frames: int, devices) -> ct.ClipTokenizer:
    config = load_experiment("tokenizer_tiny")
    config.tokenizer.chunk_frames = chunk_frames
    axes = dict(data=len(devices), fsdp=1, tensor=1, sequence=1)
    config.mesh.update(**axes)
    return ct.ClipTokenizer.from_config(config, make_mesh(config.mesh, devices))


def test_clip_shapes_chunking_and_sharding():
    """(B, T, H, W, 3) -> (B, T, H/8, W/8, C) and back; chunked, unchunked and 8-way sharded agree."""
    clips = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32, 3)).astype(np.float32)
    key = jax.random.key(3)
    reference = _tiny_tokenizer(64, jax.devices()[:1])
    latents = reference.encode(clips, key)
    assert latents.shape == (2, 3, 4, 4, reference.cfg.latent_channels)
    mean, std = reference.posterior(clips)
    noise = (np.asarray(latents) / SCALING - np.asarray(mean)) / np.asarray(std)
    assert 0.5 < noise.std() < 1.5  # a posterior sample, not the mean
    frames = reference.decode(latents)
    assert frames.shape == clips.shape
    pixels = np.asarray(reference.decode_to_pixels(latents))
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0

    # 3 steps of 2 frames on one device; 1 frame on each of 8 devices (6 frames padded to 8)
    for tok in (_tiny_tokenizer(2, jax.devices()[:1]), _tiny_tokenizer(1, jax.devices()[:8])):
        np.testing.assert_allclose(tok.encode(clips, key), latents, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tok.decode(latents), frames, rtol=1e-5, atol=1e-5)
    assert tok.encode(clips, key).sharding.num_devices == 8


def test_bad_frames_and_latents_raise():
    tok = _tiny_tokenizer(8, jax.devices()[:1])
    with pytest.raises(ValueError, match=r"\(1, 30, 32, 3\).*multiples of 8"):
        tok.encode(np.zeros((1, 30, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 32, 32, 4\).*expected 3 channels"):
        tok.posterior(np.zeros((2, 32, 32, 4), np.float32))
    with pytest.raises(ValueError, match=r"latents of shape \(1, 4, 4, 3\)"):
        tok.decode(np.zeros((1, 4, 4, 3), np.float32))
    config = load_experiment("tokenizer_tiny")
    config.tokenizer.norm_num_groups = 5
    with pytest.raises(ValueError, match=r"config.tokenizer.norm_num_groups = 5"):
        ct.TokenizerConfig.from_config(config)


def _edited_copy(folder, tmp_path, edit):
    """A copy of the diffusers folder whose tensors went through ``edit(dict) -> dict``."""
    tmp_path.mkdir()
    shutil.copy(folder / vae.CONFIG_FILE, tmp_path / vae.CONFIG_FILE)
    tensors = edit(load_file(str(folder / vae.WEIGHTS_FILE)))
    save_file(tensors, str(tmp_path / vae.WEIGHTS_FILE))
    return tmp_path


def test_weights_that_do_not_match_the_config_raise(diffusers_folder, tmp_path):
    folder, _ = diffusers_folder
    name = "decoder.up_blocks.1.resnets.0.conv1.weight"

    def wrong_shape(t):
        return {**t, name: t[name][:, :-1]}

    with pytest.raises(ValueError, match=rf"'{name}' has shape \(64, 63, 3, 3\).*needs \(64, 64, 3, 3\)"):
        vae.import_vae(_edited_copy(folder, tmp_path / "shape", wrong_shape))

    def renamed(t):
        t = dict(t)
        t["encoder.extra.weight"] = t.pop("encoder.conv_in.weight")
        return t

    with pytest.raises(
        ValueError, match=r"missing \['encoder.conv_in.weight'\].*unexpected \['encoder.extra"
    ):
        vae.import_vae(_edited_copy(folder, tmp_path / "names", renamed))

    (tmp_path / "config").mkdir()
    raw = json.loads((folder / vae.CONFIG_FILE).read_text())
    (tmp_path / "config" / vae.CONFIG_FILE).write_text(json.dumps({**raw, "layers_per_block": 1}))
    shutil.copy(folder / vae.WEIGHTS_FILE, tmp_path / "config" / vae.WEIGHTS_FILE)
    with pytest.raises(ValueError, match=r"unexpected \['decoder.up_blocks.0.resnets.2"):
        vae.import_vae(tmp_path / "config")


def test_legacy_attention_names_import(diffusers_folder, tmp_path):
    """Checkpoints saved with the old attention names (query/key/value/proj_attn) load the same."""
    folder, _ = diffusers_folder
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def rename(t):
        out = {}
        for k, v in t.items():
            for new, old in legacy.items():
                k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
            out[k] = v
        return out

    _, params = vae.import_vae(_edited_copy(folder, tmp_path / "legacy", rename))
    _, reference = vae.import_vae(folder)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_dispatch_and_save_load_round_trip(diffusers_folder, tmp_path):
    """'' is random init; a saved tokenizer loads back exactly (config through JSON); a diffusers
    folder is imported; anything else is a ValueError naming the path."""
    config = load_experiment("tokenizer_tiny")
    config.mesh.update(data=1, fsdp=1, tensor=1, sequence=1)
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    tok = tokenizer_ckpt.tokenizer_from_weights(config, mesh)
    reference = ct.ClipTokenizer.from_config(config, mesh)
    for a, b in zip(jax.tree.leaves(tok.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_array_equal(a, b)

    tokenizer_ckpt.save_tokenizer(tok, tmp_path / "ckpt", config)
    config.tokenizer.weights = str(tmp_path / "ckpt")
    loaded = tokenizer_ckpt.tokenizer_from_weights(config, mesh)
    assert loaded.cfg == tok.cfg
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(tok.params), strict=True):
        np.testing.assert_array_equal(a, b)

    config.tokenizer.weights = str(diffusers_folder[0])
    imported = tokenizer_ckpt.tokenizer_from_weights(config, mesh)
    assert imported.cfg.block_out_channels == (32, 64, 64)

    config.tokenizer.weights = str(tmp_path)
    with pytest.raises(ValueError, match=rf"{tmp_path}.*neither a tokenizer params checkpoint"):
        tokenizer_ckpt.tokenizer_from_weights(config, mesh)


def test_train_tokenizer_on_physics_videos(tmp_path):
    """train_tokenizer on 16x16 synthetic-physics videos (8 devices): the loss falls, and the saved
    tokenizer reproduces the reported held-out PSNR (recomputed here in NumPy), with the fitted
    scaling_factor."""
    data = write_training_set(str(tmp_path / "data"), 6, 16, 16, seconds=1.0)
    config = load_experiment("tokenizer_tiny")
    t = config.tokenizer.train
    t.update(steps=30, batch_size=8, log_every=1, frame_size=16, frames_per_video=8, eval_videos=2)
    t.frames_per_sample = 1  # 8 samples of a frame: one per device
    config.tokenizer.optim.warmup_steps = 5
    config.tokenizer.train.fit_scaling_factor = True
    summary = tt.train_tokenizer(config, f"{data}/videos", str(tmp_path / "w"), log=print)
    losses = summary["losses"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses

    config.tokenizer.weights = summary["tokenizer"]
    tok = tokenizer_ckpt.tokenizer_from_weights(config)
    held_out = np.concatenate([read_frames(ref, 8) for ref in open_source(f"{data}/videos").refs[-2:]])
    target = held_out.astype(np.float64) / 255
    recon = np.clip(np.asarray(tok.decode(tok.encode(held_out / 127.5 - 1)), np.float64) * 0.5 + 0.5, 0, 1)
    mse = np.mean((recon - target) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(summary["psnr"], np.mean(-10 * np.log10(mse)), atol=1e-3)
    # the fitted scaling gives the held-out posterior means unit variance
    assert tok.cfg.scaling_factor == summary["scaling_factor"] != ct.base_tokenizer_config().scaling_factor
    latents = np.asarray(tok.encode(held_out / 127.5 - 1), np.float64)
    np.testing.assert_allclose(np.std(latents), 1.0, rtol=1e-3)
