"""Train inputs: the target and the clean latent are two independent samples of each posterior."""

import jax
import numpy as np
import pytest
from conftest import load_experiment

from vgpt_jax.train.inputs import TrainInputs, posterior_pair


def test_two_independent_posterior_samples():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 4, 8, 8, 4)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=mean.shape).astype(np.float32)
    pair = posterior_pair(mean, std, jax.random.key(3), scale=0.5)
    z = {k: (np.asarray(v, np.float64) / 0.5 - mean) / std for k, v in pair.items()}  # standardised draws
    for draws in z.values():
        assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1) < 0.05  # 2048 N(0, 1) draws each
    assert abs(np.corrcoef(z["target"].ravel(), z["clean"].ravel())[0, 1]) < 0.08


def test_latent_batches_are_keyed_by_seed_and_step():
    config = load_experiment("tiny_cpu")
    inputs = TrainInputs(config)
    rng = np.random.default_rng(1)
    batch = {
        "latent_mean": rng.normal(size=(1, 2, 8, 8, 4)).astype(np.float32),
        "latent_std": np.full((1, 2, 8, 8, 4), 0.1, np.float32),
    }
    first, again, later = inputs(batch, 5), inputs(batch, 5), inputs(batch, 6)
    np.testing.assert_array_equal(first["target"], again["target"])
    assert not np.array_equal(first["target"], later["target"])
    zero_std = {**batch, "latent_std": np.zeros_like(batch["latent_std"])}
    # stored latents are already scaled
    np.testing.assert_array_equal(inputs(zero_std, 0)["clean"], batch["latent_mean"])


def test_a_batch_without_latents_or_pixels_is_an_error():
    with pytest.raises(ValueError, match="expected 'video'"):
        TrainInputs(load_experiment("tiny_cpu"))({"frames": np.zeros((1, 2, 8, 8, 3))}, 0)
