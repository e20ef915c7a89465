"""Latent caching: records read back through the training pipeline equal the online posterior."""

import jax
import numpy as np
from conftest import load_experiment, perturbed

from data_pipelines import encode_latents
from data_pipelines.array_record_source import ClipRecordSource
from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.pipeline import make_pipeline, open_source
from vgpt_jax.demo.synthetic_physics import write_training_set
from vgpt_jax.models.clip_tokenizer import ClipTokenizer
from vgpt_jax.parallel.mesh import make_mesh


def test_cached_latents_match_the_online_posterior(tmp_path):
    """Same seed, same clips: cached (mean, std) == online posterior x scaling_factor, shapes equal."""
    videos = write_training_set(str(tmp_path), 3, 64, 64, seconds=1.0) + "/videos"  # 8 frames each
    config = load_experiment("tiny_cpu")
    config.data.update(num_frames=4, frame_interval=2)
    config.tokenizer.chunk_frames = 8  # one tokenizer call per video
    config.mesh.update(data=-1, fsdp=1, tensor=1, sequence=1)
    tok = ClipTokenizer.from_config(config, make_mesh(config.mesh, jax.devices()[:1]))
    tok = ClipTokenizer(tok.cfg, perturbed(tok.params, 0.2), tok.mesh)  # a std that varies
    spec = ClipSpec.from_config(config.data, min_side=64)
    out = str(tmp_path / "latents")
    counts = encode_latents.encode_dataset(tok, open_source(videos), out, spec, {"k": 1})
    assert counts == {"records": 3, "skipped": 0, "rejected": 0}
    latents = ClipRecordSource(out)
    assert latents.kind == "latents" and latents.index["meta"]["k"] == 1
    assert latents[0].arrays["latent_mean"].shape == (8, 8, 8, 4)

    mesh = make_mesh(config.mesh)  # 8 devices: a global batch of 8 clips
    pixels = next(make_pipeline(config, mesh, open_source(videos), spec=spec))
    cached = next(make_pipeline(config, mesh, latents, spec=spec))
    mean, std = tok.posterior(pixels["video"])
    scale = tok.cfg.scaling_factor
    assert cached["latent_mean"].shape == mean.shape == (8, 4, 8, 8, 4)
    np.testing.assert_allclose(cached["latent_mean"], np.asarray(mean) * scale, rtol=0, atol=1e-5)
    np.testing.assert_allclose(cached["latent_std"], np.asarray(std) * scale, rtol=0, atol=1e-5)
    assert np.ptp(np.asarray(std)) > 0
