"""Checkpoints: async save, keep-N, restore onto another mesh with the right shardings."""

import json
import subprocess
import sys

import jax
import numpy as np
from conftest import load_experiment

from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.manager import Checkpointer, abstract_with_shardings
from vgpt_jax.checkpoint.params import CONFIG_FILE, load_config, load_params
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train.step import Trainer


def _trainer(devices, fsdp):
    config = load_experiment("tiny_cpu")
    config.mesh.update(data=1, fsdp=fsdp, tensor=1, sequence=1)
    config.data.per_device_batch_size = 8 // fsdp
    return Trainer(config, make_mesh(config.mesh, jax.devices()[:devices]))


def test_written_on_8_devices_restores_on_4_and_1(tmp_path):
    """A state sharded over 8 devices comes back equal, and sharded as the new mesh says."""
    writer = _trainer(8, 8)
    state = writer.init()
    rng = np.random.default_rng(0)
    batch = rng.normal(size=writer.batch_shape).astype(np.float32)
    state, _ = writer.step(state, writer.shard_batch({"target": batch, "clean": batch}))
    expected = jax.tree.map(np.asarray, state)

    ckpt = Checkpointer(tmp_path / "ckpt", max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, state, writer.config)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]  # keep-N
    assert ckpt.restore_config().model.hidden_size == 64

    for devices in (4, 1):
        reader = _trainer(devices, devices)
        target = abstract_with_shardings(reader.abstract_state, reader.state_shardings)
        restored = ckpt.restore(target)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(got), want)
        qkv = restored.params["backbone"]["layers"]["attention"]["qkv"]
        assert qkv.sharding == reader.state_shardings.params["backbone"]["layers"]["attention"]["qkv"]
        assert len(qkv.sharding.device_set) == devices
    ckpt.close()


def test_save_params_of_numpy_arrays_adds_no_copy_of_them(tmp_path):
    """A conversion's NumPy tree is written from its own memory: the process's peak resident
    memory grows by far less than the tree. Orbax's defaults deep-copy every host array first, and
    OCDBT holds a copy of each array over 2 GiB (the 3.76 B model's layer stacks reach 6 GiB)."""
    script = f"""
import resource, ml_collections, numpy as np
from vgpt_jax.checkpoint.params import save_params
tree = {{"stack": np.ones((9, 2**26), np.float32), "small": np.ones((4, 2**20), np.float32)}}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
save_params({str(tmp_path / "ckpt")!r}, tree, ml_collections.ConfigDict({{"a": 1}}))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown_gib = float(out.stdout.split()[-1])
    assert grown_gib < 0.25, f"peak memory grew {grown_gib:.2f} GiB saving a 2.27 GiB tree"
    restored = load_params(tmp_path / "ckpt")
    assert restored["stack"].shape == (9, 2**26) and float(restored["stack"][8, -1]) == 1.0


def test_a_config_saved_before_a_field_existed_loads_with_its_default(tmp_path):
    """A checkpoint's config JSON that lacks fields (written by an older version) gets them at their
    defaults; its own values, and fields the defaults do not have, are kept."""
    saved = load_experiment("tiny_cpu").to_dict()
    del saved["model"]["remat_policy"], saved["sampling"]["shift"]
    saved["model"]["hidden_size"] = 96
    saved["extra"] = {"note": "kept"}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved, default=list))

    config = config_lib.validate(load_config(tmp_path))
    assert config.model.remat_policy == "full" and config.sampling.shift == 1.0  # base_config's
    assert config.model.hidden_size == 96 and config.model.num_layers == 2  # the saved values
    assert config.extra.note == "kept"
