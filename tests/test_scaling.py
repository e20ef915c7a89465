"""Stage 4's shape (80-frame recipe, long sequences) at tiny width on 8 devices: sequence sharding
combined with FSDP gives the single-device losses, and the compiled step's collectives move what
the mesh implies (``pytest -s`` prints them)."""

import jax
import numpy as np
import pytest
from conftest import REPO

from vgpt_jax import config as config_lib
from vgpt_jax.parallel.collectives import collective_bytes
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.step import Trainer

FRAMES = 32  # 1152 tokens a sequence at the tiny latent: 288 a device under sequence=4
GLOBAL_BATCH = 4
STEPS = 2


def _config(mesh: dict[str, int]):
    """experiments/videogpt_stage4.py:runlocal at FRAMES frames, a learning rate that moves the
    second step's loss, GLOBAL_BATCH sequences over ``mesh``."""
    config = config_lib.load_experiment(f"{REPO}/experiments/videogpt_stage4.py:runlocal")
    config.data.num_frames = FRAMES
    config.data.per_device_batch_size = GLOBAL_BATCH // (mesh["data"] * mesh["fsdp"])
    config.optim.update(learning_rate=1e-3, warmup_steps=0)
    config.mesh.update(**mesh)
    return config


def _run(mesh: dict[str, int], batch: dict, start=None):
    """STEPS steps on ``mesh`` from ``start`` (host arrays; None: a fresh init) -> (losses,
    collective bytes of the compiled step, trainer, the initial state on the host)."""
    config = _config(mesh)
    devices = jax.devices()[: mesh["data"] * mesh["fsdp"] * mesh["tensor"] * mesh["sequence"]]
    trainer = Trainer(config, make_mesh(config.mesh, devices))
    state = trainer.init() if start is None else jax.device_put(start, trainer.state_shardings)
    start = jax.tree.map(np.asarray, state)
    sharded = trainer.shard_batch(batch)
    step = trainer.compile(state, sharded)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, sharded)
        losses.append(float(metrics["loss"]))
    return np.array(losses), collective_bytes(step), trainer, start


@pytest.fixture(scope="module")
def unsharded_run():
    """The reference: the global batch on one device."""
    shape = (GLOBAL_BATCH, FRAMES, 8, 8, 4)  # the tiny latent: 8x8x4
    target = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    batch = {"target": target, "clean": target}
    losses, collectives, _, start = _run(dict(data=1, fsdp=1, tensor=1, sequence=1), batch)
    assert not any(collectives.values())
    return batch, losses, start


def _fsdp_parameter_bytes(trainer: Trainer, params) -> int:
    """Bytes of the parameters whose sharding splits them over fsdp."""
    shardings = jax.tree.leaves(trainer.state_shardings.params)
    return sum(
        p.nbytes
        for p, s in zip(jax.tree.leaves(params), shardings, strict=True)
        if "fsdp" in jax.tree.leaves(tuple(s.spec))
    )


@pytest.mark.slow
def test_sequence_and_fsdp_meshes_match_one_device(unsharded_run):
    """sequence=2 with fsdp=4 and sequence=4 with fsdp=2: the single-device losses (fp32). Per
    device and step, every FSDP-sharded parameter is gathered whole at least once and its gradient
    summed over the batch shards (XLA:CPU all-reduces the whole gradient where a GPU
    reduce-scatters its shard); and sequence=4, whose devices each hold twice the sequences,
    moves more bytes of activations than sequence=2 (the parameters' collectives being alike)."""
    batch, ref_losses, start = unsharded_run
    totals = {}
    for fsdp, sequence in ((4, 2), (2, 4)):
        losses, collectives, trainer, _ = _run(
            dict(data=1, fsdp=fsdp, tensor=1, sequence=sequence), batch, start
        )
        sharded_params = _fsdp_parameter_bytes(trainer, start.params)
        print(f"\nfsdp={fsdp},sequence={sequence}: losses {losses}, FSDP-sharded params {sharded_params} B")
        print("  per device and step: " + ", ".join(f"{kind} {b} B" for kind, b in collectives.items()))
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
        assert collectives["all-gather"] >= sharded_params
        gradient_sums = collectives["all-reduce"] + fsdp * collectives["reduce-scatter"]
        assert gradient_sums >= sharded_params
        totals[sequence] = sum(collectives.values())
    assert ref_losses[1] != ref_losses[0]  # the first update moved the loss
    assert totals[4] > totals[2]
