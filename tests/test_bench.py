"""``make bench`` plumbing: the comparator's flags, the speed-up columns, mesh and config overrides."""

import pytest

from vgpt_jax.config import load_experiment
from vgpt_jax.tools import bench


def test_comparator_args_carry_the_config_sizes():
    config = load_experiment("experiments/videogpt_1b.py")
    args = bench.comparator_args(config, "train", frames=48, seed=3, steps=5)
    flags = dict(a[2:].split("=", 1) for a in args)
    assert flags == {
        "mode": "train",
        "hidden": "2048",
        "layers": "20",
        "heads": "16",
        "kv-heads": "16",
        "mlp": "5632",
        "vocab": "32064",
        "patch-dim": "16",  # 2 x 2 patches of 4 latent channels
        "tokens-per-frame": "220",  # 320x176 frames -> 40x22 latents -> 20x11 patches
        "theta": "10000.0",
        "frames": "48",
        "seed": "3",
        "steps": "5",
    }


def test_with_comparator_speedups_and_shared_peak():
    official = {"step_s": 1.5, "tokens_per_s": 1000.0, "model_tflops_per_s": 100.0, "max_mem_gib": 9.0}
    row = bench.with_comparator({"step_s": 0.5, "tokens_per_s": 6000.0}, official, "step_s", peak=400.0)
    # a train row compares tokens/s (ours may run several sequences per step); MFU on our peak
    assert row["speedup"] == 6.0 and row["official_mfu"] == 0.25 and row["official_step_s"] == 1.5
    sample = bench.with_comparator({"clip_s": 2.0}, {**official, "clip_s": 10.0}, "clip_s", peak=400.0)
    assert sample["speedup"] == 5.0
    failed = bench.with_comparator({"step_s": 0.5}, {"error": "CUDA out of memory"}, "step_s", peak=400.0)
    assert "speedup" not in failed and failed["official"]["error"] == "CUDA out of memory"


def test_mesh_and_config_overrides():
    assert bench.parse_mesh("fsdp=2,sequence=2") == {"data": 1, "fsdp": 2, "tensor": 1, "sequence": 2}
    with pytest.raises(ValueError, match="expected AXIS=SIZE"):
        bench.parse_mesh("pipeline=2")
    config = load_experiment(
        "experiments/tiny_cpu.py", ["model.remat_policy=dots", "optim.learning_rate=3e-4"]
    )
    assert config.model.remat_policy == "dots" and config.optim.learning_rate == 3e-4
    with pytest.raises(ValueError, match="no field 'model.nope'"):
        load_experiment("experiments/tiny_cpu.py", ["model.nope=1"])


def test_features_row_on_the_tiny_config():
    row = bench.bench_features("experiments/tiny_cpu.py", [1, 2], 4, 64, 64, batch_per_device=1)
    assert row["finite"] and row["batch"] == 8 and row["clips_per_s"] > 0  # 8 fake CPU devices
    assert row["ucf101_min"] == pytest.approx(
        bench.UCF101_VIDEOS / row["clips_per_s"] / 60, abs=0.05
    )  # rounded
    assert row["row"] == "features tiny_cpu layers 1,2, 4 frames 64x64"


def test_rows_take_the_experiment_argument_and_their_own_mesh():
    row = "experiments/videogpt_stage4.py:runlocal@32:mesh.sequence=2"
    assert bench.parse_row(row) == ("experiments/videogpt_stage4.py:runlocal", "32", ["mesh.sequence=2"])
    assert bench.parse_row("experiments/videogpt_1b.py@48:model.remat_policy=attention") == (
        "experiments/videogpt_1b.py",
        "48",
        ["model.remat_policy=attention"],
    )
    # bench_train passes --mesh as overrides before the row's: the row's mesh wins
    config = bench.load_row_config(row, ["mesh.fsdp=4", "mesh.sequence=1"])
    assert config.data.num_frames == 32 and config.model.hidden_size == 64  # stage 4 at runlocal size
    assert (config.mesh.fsdp, config.mesh.sequence, config.data.flexible_interval) == (4, 2, True)


def test_table_prints_the_collectives_of_a_train_row(capsys):
    mib = {"all-gather": 2.401, "reduce-scatter": 0.0, "all-reduce": 2.351}
    mesh = {"data": 1, "fsdp": 4, "tensor": 1, "sequence": 2}
    bench.print_table([{"row": "train x", "step_s": 1.0, "mesh": mesh, "collective_mib": mib}], peak=1.0)
    assert (
        "collectives of train x, fsdp=4,sequence=2 (per device and step): all-gather 2.401 MiB, "
        "all-reduce 2.351 MiB\n" in capsys.readouterr().out
    )


def test_sample_row_on_the_tiny_config():
    # the row builds its parameters' shardings under the sampling mesh: unboxing abstract leaves
    # there once raised in jax's eager sharding constraint
    row = bench.bench_sample(
        "experiments/tiny_cpu.py", 2, 2, 2, 1.5, mesh=bench.parse_mesh("fsdp=2,tensor=4"), with_profile=True
    )  # tiny_cpu has 4 heads; the 8 fake CPU devices
    assert row["finite"] and row["clip_s"] > 0
    assert row["profile"]["wall_ms"] > 0  # a CPU trace has no device streams: all of it host time
    assert row["row"] == "sample tiny_cpu 2+2 frames, 2 steps, CFG 1.5"
    mesh = bench.parse_mesh("fsdp=2,tensor=4")
    fp8 = bench.bench_sample("experiments/tiny_cpu.py:model.fp8_projections=True", 2, 2, 2, 1.5, mesh=mesh)
    assert fp8["row"] == "sample tiny_cpu 2+2 frames, 2 steps, CFG 1.5 model.fp8_projections=True"
    assert 0 < fp8["x1_mean_diff"] <= fp8["x1_max_diff"] and fp8["x1_mean_diff"] < 0.1 * fp8["x1_mean_abs"]


def test_unboxed_abstract_leaves_under_a_mesh():
    import flax.linen as nn
    import jax

    from vgpt_jax.parallel import mesh as mesh_lib

    class Dense(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_logical_partitioning(nn.initializers.ones, ("embed", "mlp"))
            return x @ self.param("kernel", init, (3, 5))

    mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    with mesh_lib.sharding_context(mesh, [("embed", "fsdp"), ("mlp", None)]):
        boxed = jax.eval_shape(Dense().init, jax.random.key(0), jax.numpy.zeros((1, 3)))
        leaves = jax.tree.leaves(mesh_lib.unboxed(boxed))
    assert [(leaf.shape, str(leaf.dtype)) for leaf in leaves] == [((3, 5), "float32")]
