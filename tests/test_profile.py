"""The step profile: kernel kinds, the device rows of a trace, busy time, per-call sums."""

import jax
import jax.numpy as jnp

from vgpt_jax.tools import profile


def test_kernel_kinds_from_names():
    assert profile.kernel_kind("block_sparse_attention_fwd") == "attention"
    assert profile.kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert profile.kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "matmul"
    assert profile.kernel_kind("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert profile.kernel_kind("loop_multiply_fusion_3") == "other"
    assert profile.kernel_kind("input_reduce_fusion") == "other"


def _trace():
    def meta(pid, tid, what, name):
        return {"ph": "M", "pid": pid, "tid": tid, "name": what, "args": {"name": name}}

    def kernel(pid, tid, name, ts, dur):
        return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}

    return [
        meta(1, 0, "process_name", "/host:CPU"),
        meta(1, 5, "thread_name", "python"),
        meta(2, 0, "process_name", "/device:GPU:0"),
        meta(2, 7, "thread_name", "Stream #13(Compute)"),
        meta(2, 8, "thread_name", "Stream #14(MemcpyD2D)"),
        meta(2, 9, "thread_name", "XLA Ops"),
        kernel(1, 5, "PjitFunction(step)", 0, 500),  # host: not a kernel
        kernel(2, 7, "sm90_xmma_gemm_bf16", 0, 100),
        kernel(2, 7, "block_sparse_attention_fwd", 100, 60),
        kernel(2, 8, "loop_add_fusion", 140, 40),  # overlaps the attention by 20
        kernel(2, 9, "fusion.1", 0, 400),  # the per-op row repeats the streams' time
        kernel(2, 7, "sm90_xmma_gemm_bf16", 300, 100),
    ]


def test_device_kernels_take_only_stream_rows_of_devices():
    names = [name for name, _, _ in profile.device_kernels(_trace())]
    gemm = "sm90_xmma_gemm_bf16"
    assert names == [gemm, "block_sparse_attention_fwd", "loop_add_fusion", gemm]


def test_busy_time_is_the_union_of_intervals():
    # [0,100) ∪ [100,160) ∪ [140,180) ∪ [300,400) = 180 + 100
    assert profile.busy_time(profile.device_kernels(_trace())) == 280.0
    assert profile.busy_time([("a", 0.0, 10.0), ("b", 2.0, 3.0)]) == 10.0  # nested


def test_summary_per_call():
    summary = profile.summarize(profile.device_kernels(_trace()), wall_us=1000.0, calls=2)
    assert summary["matmul_ms"] == 0.1  # 200 µs over 2 calls
    assert summary["attention_ms"] == 0.03
    assert summary["other_ms"] == 0.02
    assert summary["device_busy_ms"] == 0.14
    assert summary["host_idle_ms"] == 0.36  # (1000 - 280) / 2
    assert summary["kernels"] == 2
    assert summary["top_kernels"]["matmul"] == [["sm90_xmma_gemm_bf16", 0.1]]
    assert summary["attention_calls"] == {
        "block_sparse_attention_fwd": {"per_call": 0.5, "min_ms": 0.06, "median_ms": 0.06, "max_ms": 0.06}
    }


def test_attention_call_statistics():
    kernels = [
        ("block_sparse_attention_fwd", 10.0 * i, d) for i, d in enumerate((3000.0, 1000.0, 2000.0, 9000.0))
    ]
    stats = profile.summarize(kernels, wall_us=1e5, calls=2)["attention_calls"]["block_sparse_attention_fwd"]
    assert stats == {"per_call": 2.0, "min_ms": 1.0, "median_ms": 2.5, "max_ms": 9.0}


def test_profile_of_a_jitted_call_runs():
    """A real trace on this platform: without device streams (a CPU) all time is host time."""
    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((128, 128))
    f(x).block_until_ready()
    summary = profile.profile(lambda: f(x), calls=2)
    assert summary["wall_ms"] > 0
    if jax.default_backend() == "cpu":
        assert summary["device_busy_ms"] == 0.0 and summary["host_idle_ms"] == summary["wall_ms"]


HLO = """
%fused_computation.5 (param_0: bf16[4,8]) -> bf16[4,16] {
  %param_0 = bf16[4,8]{1,0} parameter(0)
  ROOT %pad.3 = bf16[4,16]{1,0} pad(%param_0, %c), metadata={op_name="jit(step)/attention/pad" id=7}
}

ENTRY %main (p: bf16[4,8]) -> bf16[4,16] {
  %p = bf16[4,8]{1,0} parameter(0)
  ROOT %loop_pad_fusion.1 = bf16[4,16]{1,0} fusion(%p), metadata={op_name="jit(step)/attention/pad"}
  %wrapped-transpose = bf16[8,4]{1,0} fusion(%p), metadata={op_name="jit(step)/transpose(jvp(mlp))/tr"}
}
"""


def test_kernel_ops_name_kernels_by_their_instructions_op():
    ops = profile.kernel_ops(HLO)
    # kernel names write the instruction's '.' and '-' as '_'; the jit(...) prefix is dropped
    assert ops["loop_pad_fusion_1"] == "attention/pad"
    assert ops["wrapped_transpose"] == "transpose(jvp(mlp))/tr"
    assert ops["pad_3"] == "attention/pad"
    assert "p" not in ops  # no metadata, no op name


def test_summary_names_the_largest_kernels_where_known():
    kernels = [("loop_pad_fusion_1", 0.0, 300.0), ("loop_add_fusion", 300.0, 100.0)]
    summary = profile.summarize(kernels, wall_us=400.0, calls=1, ops=profile.kernel_ops(HLO))
    assert summary["top_kernels"]["other"] == [
        ["loop_pad_fusion_1", 0.3, "attention/pad"],
        ["loop_add_fusion", 0.1],
    ]


def test_kernel_ops_read_a_compiled_programs_text():
    compiled = jax.jit(lambda x: jnp.pad(x, 1) * 2).lower(jnp.ones((8, 8))).compile()
    ops = profile.kernel_ops(compiled.as_text())
    assert ops and all("." not in name and "-" not in name for name in ops)
    assert any(op.endswith("mul") or op.endswith("pad") for op in ops.values()), ops
