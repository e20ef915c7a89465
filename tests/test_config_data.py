"""Sharding rules and kernel tiles are config data: an experiment's override reaches the shardings
and the kernels, a bad value is refused at validation, and a config read back from JSON means the
same."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment
from jax.sharding import PartitionSpec

from vgpt_jax import config as config_lib
from vgpt_jax.models import clip_tokenizer, video_gpt
from vgpt_jax.nn.attention import KernelTiles, attend
from vgpt_jax.nn.tokens import NOISY, TokenAttrs
from vgpt_jax.parallel.mesh import make_mesh


def test_logical_axis_rules_decide_the_parameter_shardings():
    config = load_experiment("tiny_cpu")
    config.mesh.update(data=1, fsdp=4, tensor=2, sequence=1)
    mesh = make_mesh(config.mesh, jax.devices()[:8])
    table = video_gpt.abstract_params(config, mesh)["embed_tokens"]["embedding"]  # (vocab, embed)
    assert table.sharding.spec == PartitionSpec("tensor", "fsdp")

    rules = dict(config.mesh.logical_axis_rules)
    rules.update(embed=None, vocab=("fsdp", "tensor"))
    config.mesh.logical_axis_rules = tuple(rules.items())
    config_lib.validate(config)
    table = video_gpt.abstract_params(config, mesh)["embed_tokens"]["embedding"]
    assert table.sharding.spec == PartitionSpec(("fsdp", "tensor"), None)

    # read back from JSON (lists, not tuples), the rules mean the same
    saved = config_lib.with_defaults(json.loads(config.to_json()))
    assert video_gpt.abstract_params(saved, mesh)["embed_tokens"]["embedding"].sharding == table.sharding


def test_the_tokenizer_has_its_own_rules():
    config = load_experiment("tokenizer_tiny")
    config.mesh.update(data=1, fsdp=8, tensor=1, sequence=1)
    mesh = make_mesh(config.mesh, jax.devices()[:8])
    cfg = clip_tokenizer.TokenizerConfig.from_config(config)
    kernels = [a for a in jax.tree.leaves(clip_tokenizer.abstract_params(cfg, mesh)) if a.ndim == 4]
    assert kernels and all(a.sharding.spec == PartitionSpec(None, None, None, None) for a in kernels)

    config.tokenizer.logical_axis_rules = (("conv_out", "fsdp"),)
    cfg = clip_tokenizer.TokenizerConfig.from_config(config)
    for a in jax.tree.leaves(clip_tokenizer.abstract_params(cfg, mesh)):
        if a.ndim == 4:  # (height, width, in, out) convolution kernels
            assert a.sharding.spec == PartitionSpec(None, None, None, "fsdp")


def test_kernel_tiles_reach_the_kernels():
    config = load_experiment("tiny_cpu")
    assert video_gpt.ModelConfig.from_config(config).attention_tiles == KernelTiles(
        block_sparse=((64, 64, 4, 3),) * 3, splash=(512, 512)
    )
    config.model.attention.block_sparse.dq.block_k = 32
    config.model.attention.splash.block_kv = 256
    config.model.attention.block_sparse.forward_kernel = "hopper"
    config.model.attention.block_sparse.hopper.block_k = 64
    tiles = video_gpt.ModelConfig.from_config(config).attention_tiles
    assert tiles == KernelTiles(
        block_sparse=((64, 64, 4, 3), (64, 64, 4, 3), (64, 32, 4, 3)),
        splash=(512, 256),
        forward_kernel="hopper",
        hopper=(64, 2),
    )

    # a tile the Triton kernels cannot take is refused by the kernel it was passed to
    x = jnp.zeros((1, 16, 2, 8))
    attrs = TokenAttrs(*(np.zeros(16, np.int32) for _ in range(4)), np.zeros(16, bool))
    attrs = attrs._replace(kind=np.full(16, NOISY, np.int32))
    odd = KernelTiles(block_sparse=((64, 64, 4, 3), (48, 64, 4, 3), (64, 64, 4, 3)), splash=(512, 512))
    with pytest.raises(ValueError, match="dkv.block_q must be a power of two >= 16"):
        attend(x, x, x, attrs, attrs, backend="block_sparse", query_chunk=16, tiles=odd)
    with pytest.raises(ValueError, match="block_kv=200"):
        attend(
            x,
            x,
            x,
            attrs,
            attrs,
            backend="splash",
            query_chunk=16,
            tiles=KernelTiles(odd.block_sparse, (512, 200)),
        )


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("model.attention.block_sparse.fwd.block_q", 48, "power of two"),
        ("model.attention.block_sparse.dkv.num_warps", 0, "positive integer"),
        ("model.attention.splash.block_kv", 200, "multiple of 128"),
        ("model.attention.block_sparse.forward_kernel", "cudnn", "one of"),
        ("model.attention.block_sparse.hopper.block_k", 96, "64 or 128"),
        ("model.attention.block_sparse.dq_kernel", "cudnn", "one of"),
        ("model.attention.block_sparse.dkv_kernel", "xla", "one of"),
        ("mesh.logical_axis_rules", (("embed", "pipeline"),), "over the mesh axes"),
        ("tokenizer.logical_axis_rules", (("conv_out",),), "pairs"),
    ],
)
def test_bad_rules_and_tiles_name_the_field(field, value, needle):
    config = load_experiment("tiny_cpu")
    *parents, name = field.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[name] = value
    with pytest.raises(ValueError, match=rf"{field}.*{needle}"):
        config_lib.validate(config)


@pytest.mark.parametrize(("kernel", "tile"), [("dq", "block_k"), ("dkv", "block_q")])
def test_hopper_backward_tiles_are_checked_unless_triton_is_asked_for(kernel, tile):
    config = load_experiment("tiny_cpu")
    config.model.attention.block_sparse[kernel][tile] = 32  # Triton's kernel takes it
    config.model.attention.block_sparse[f"{kernel}_kernel"] = "triton"
    config_lib.validate(config)
    # "auto" is checked too: the same config must also run where auto picks the Hopper kernel
    for choice in ("auto", "hopper"):
        config.model.attention.block_sparse[f"{kernel}_kernel"] = choice
        with pytest.raises(ValueError, match=rf"{kernel}\.{tile}.*64 or 128"):
            config_lib.validate(config)
