"""A random-weight export (vgpt_jax.tools.random_export) that `vgpt sample` loads like a trained one."""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from vgpt_jax.checkpoint.inference import load_for_inference
from vgpt_jax.models.video_gpt import abstract_params
from vgpt_jax.tools import random_export


def test_random_export_loads_with_every_parameter_drawn(tmp_path):
    out = tmp_path / "export"
    assert random_export.main(["experiments/tiny_cpu.py", str(out), "--config.model.num_layers=1"]) == 0
    config, params, tokenizer = load_for_inference(out)
    assert config.model.num_layers == 1 and config.tokenizer.weights == ""
    flat = traverse_util.flatten_dict(params)
    expected = traverse_util.flatten_dict(abstract_params(config))
    assert {p: x.shape for p, x in flat.items()} == {p: x.shape for p, x in expected.items()}
    # the init's zero arrays (the final layer, biases) carry N(0, 0.02^2) noise too
    final = np.asarray(flat[("final_layer", "linear", "kernel")], np.float64)
    assert final.size > 100 and 0.015 < final.std() < 0.025, final.std()
    assert tokenizer.params  # the export holds the tokenizer's own weights
