"""Collective bytes read from HLO text: hand-written programs, and a compiled one on 4 devices."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, PartitionSpec

from vgpt_jax.parallel.collectives import collective_bytes, shape_bytes

# GPU-style async pairs, a tuple-shaped combined all-reduce, a reduce-scatter wrapped in an async
# computation, and a loop of 3 known iterations around an all-to-all.
HLO = """\
HloModule jit_step, is_scheduled=true, entry_computation_layout={(bf16[4,8]{1,0})->f32[]}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%wrapped_reduce_scatter (p: f32[64,16]) -> f32[16,16] {
  %p = f32[64,16]{1,0} parameter(0)
  ROOT %rs = f32[16,16]{1,0} reduce-scatter(%p), replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
}

%b (state: (s32[], f32[2,8])) -> (s32[], f32[2,8]) {
  %state = (s32[], f32[2,8]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %x = f32[2,8]{1,0} get-tuple-element(%state), index=1
  %a2a = f32[2,8]{1,0} all-to-all(%x), replica_groups={{0,1}}, dimensions={0}
  ROOT %next = (s32[], f32[2,8]{1,0}) tuple(%i, %a2a)
}

%c (state: (s32[], f32[2,8])) -> pred[] {
  %state = (s32[], f32[2,8]{1,0}) parameter(0)
  ROOT %t = pred[] constant(true)
}

ENTRY %main (p0: bf16[4,8], p1: f32[64,16], p2: f32[2,8]) -> f32[] {
  %p0 = bf16[4,8]{1,0} parameter(0)
  %p1 = f32[64,16]{1,0} parameter(1)
  %p2 = f32[2,8]{1,0} parameter(2)
  %ag = bf16[16,8]{1,0} all-gather(%p0), channel_id=1, replica_groups=[1,4]<=[4], dimensions={0}
  %ags = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(%p0), channel_id=2, dimensions={0}
  %agd = bf16[16,8]{1,0} all-gather-done(%ags)
  %ar = (f32[]{:T(128)}, f32[3]{0}, /*index=2*/s32[2,2]{1,0}) all-reduce(%p2, %p2, %p2), to_apply=%add
  %ars = f32[2,8]{1,0} all-reduce-start(%p2), channel_id=3, to_apply=%add
  %ard = f32[2,8]{1,0} all-reduce-done(%ars)
  %cps = (f32[2,8], f32[2,8], u32[], u32[]) collective-permute-start(%p2), source_target_pairs={{0,1},{1,0}}
  %cpd = f32[2,8]{1,0} collective-permute-done(%cps)
  %rss = ((f32[64,16]{1,0}), f32[16,16]{1,0}) async-start(%p1), calls=%wrapped_reduce_scatter
  %rsd = f32[16,16]{1,0} async-done(%rss), calls=%wrapped_reduce_scatter
  %init = (s32[], f32[2,8]{1,0}) tuple(%p0, %p2)
  %loop = (s32[], f32[2,8]) while(%init), condition=%c, body=%b, backend_config={"known_trip_count":{"n":"3"}}
  %unknown = (s32[], f32[2,8]) while(%init), condition=%c, body=%b
  ROOT %r = f32[] constant(0)
}
"""


def test_shape_bytes_of_arrays_and_tuples():
    assert shape_bytes("bf16[2,3]{1,0}") == 12
    assert shape_bytes("f32[]") == 4
    assert shape_bytes("(pred[5], s32[2,2]{1,0}, /*index=2*/u8[3])") == 5 + 16 + 3
    assert shape_bytes("s4[3]") == 2  # packed, rounded up to whole bytes
    with pytest.raises(ValueError, match="unknown HLO element type"):
        shape_bytes("q7[2]")


def test_hand_written_program():
    assert collective_bytes(HLO) == {
        "all-gather": 2 * 16 * 8 * 2,  # sync + async (counted once, at its -done)
        "reduce-scatter": 16 * 16 * 4,  # inside the async computation, not again at async-done
        "all-reduce": (4 + 3 * 4 + 4 * 4) + 2 * 8 * 4,  # a tuple, then an async one
        "collective-permute": 2 * 8 * 4,  # not the -start's tuple of buffers
        "all-to-all": (3 + 1) * 2 * 8 * 4,  # 3 known iterations, then a loop of unknown count: once
    }


def test_compiled_shard_map_on_four_devices():
    """Each collective of a shard_map program over 4 devices: per device, its result shape (fp32:
    XLA:CPU would run a bf16 reduction in fp32)."""
    mesh = jax.make_mesh((4,), ("x",), axis_types=(AxisType.Auto,), devices=jax.devices()[:4])
    ring = [(i, (i + 1) % 4) for i in range(4)]

    def body(a, b):  # a: this device's (4, 8) of (16, 8); b: its (8, 4) of (32, 4)
        gathered = jax.lax.all_gather(a, "x", tiled=True)  # (16, 8)
        summed = jax.lax.psum(b, "x")  # (8, 4)
        scattered = jax.lax.psum_scatter(b, "x", tiled=True)  # (2, 4)
        shifted = jax.lax.ppermute(a, "x", ring)  # (4, 8)
        return gathered, summed, scattered, shifted

    spec = PartitionSpec("x")
    program = jax.jit(
        jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(spec, spec),
            out_specs=(PartitionSpec(), spec, spec, spec),
            check_vma=False,  # the gathered array is the same on every device
        )
    )
    compiled = program.lower(jnp.ones((16, 8)), jnp.ones((32, 4))).compile()
    assert collective_bytes(compiled) == {
        "all-gather": 16 * 8 * 4,
        "reduce-scatter": 2 * 4 * 4,
        "all-reduce": 8 * 4 * 4,
        "collective-permute": 4 * 8 * 4,
        "all-to-all": 0,
    }
