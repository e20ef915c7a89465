"""``vgpt info`` and config validation: exact numbers and clear errors."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, load_experiment

from vgpt_jax import config as config_lib


def _vgpt(*args):
    return subprocess.run(
        [sys.executable, "-m", "vgpt_jax.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_info_reports_the_official_parameter_count():
    """Stage configs hold the 3.76 B release backbone: 3,762,072,592 parameters (spec §3.4)."""
    result = _vgpt("info", "--config", "experiments/videogpt_stage4.py")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_params"] == 3_762_072_592
    assert info["tokens_per_frame"] == 220  # 320x176 -> 40x22 latents -> 20x11 patches
    assert info["official_max_seq_len"] == 35_298  # (2·80 − 1)·222
    assert info["max_seq_len"] == 2 * 80 * 222
    assert info["attention_backend"] == "xla"
    assert info["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1, "sequence": 1}


def test_info_rejects_an_unknown_override():
    result = _vgpt("info", "--config", "experiments/tiny_cpu.py", "--config.model.nope=3")
    assert result.returncode != 0
    assert "nope" in result.stderr


@pytest.mark.parametrize(
    "stage,frames,partition,b2,eps,flexible",
    [
        (1, 16, "per_frame", 0.999, 1e-8, False),
        (2, 48, "random", 0.95, 1e-5, False),
        (3, 48, "random", 0.95, 1e-5, True),
        (4, 80, "random", 0.95, 1e-5, True),
    ],
)
def test_stage_configs_follow_the_official_scripts(stage, frames, partition, b2, eps, flexible):
    """Spec §7–§8: frames, partition, interval rule and the optimiser each stage actually ran."""
    c = config_lib.validate(load_experiment(f"videogpt_stage{stage}"))
    assert (c.data.num_frames, c.layout.partition, c.data.flexible_interval) == (frames, partition, flexible)
    assert (c.optim.learning_rate, c.optim.b1, c.optim.b2, c.optim.eps) == (1e-4, 0.9, b2, eps)
    assert (c.optim.weight_decay, c.optim.grad_clip_norm, c.optim.warmup_steps) == (0.1, 1.0, 320_000)
    assert c.data.frame_interval == 4 and c.data.max_image_size == 320 and c.layout.clean_noise_min == 0.9
    assert (c.model.hidden_size, c.model.num_layers, c.model.num_heads, c.model.mlp_dim) == (
        3072,
        32,
        32,
        8192,
    )


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("model.num_heads", 5, "model.hidden_size"),
        ("model.attention.backend", "flash", "model.attention.backend"),
        ("data.latent_height", 7, "data.latent_height"),
        ("layout.partition", "blocks", "layout.partition"),
        ("layout.first_clip_loss_weight", -1.0, "layout.first_clip_loss_weight"),
        ("mesh.fsdp", 0, "mesh.fsdp"),
        ("sampling.clip_frames", 80, "sampling.clip_frames"),
    ],
)
def test_validate_names_the_bad_field(field, value, needle):
    c = load_experiment("tiny_cpu")
    section, name = field.rsplit(".", 1)
    node = c
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        config_lib.validate(c)


def test_mesh_that_does_not_fit_the_devices_is_a_clear_error():
    from vgpt_jax.parallel.mesh import mesh_shape

    c = load_experiment("tiny_cpu")
    c.mesh.update(data=3, fsdp=1, tensor=1, sequence=1)
    with pytest.raises(ValueError, match="needs 3 devices but 8 are available"):
        mesh_shape(c.mesh, 8)
    c.mesh.update(data=3, fsdp=-1)
    with pytest.raises(ValueError, match="does not divide 8"):
        mesh_shape(c.mesh, 8)


def test_a_mistyped_field_names_the_nearest_valid_ones(capsys):
    from vgpt_jax import cli

    assert cli.main(["info", "--config", "experiments/tiny_cpu.py", "--config.optim.learnig_rate=1e-3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "vgpt info: error: config has no field 'optim.learnig_rate'; did you mean optim.learning_rate or "
    )


def test_overrides_keep_types_and_never_touch_the_experiment():
    base = load_experiment("tiny_cpu")
    c = config_lib.apply_overrides(
        base, ["optim.learning_rate=1", "layout.fixed_partition=[3, 5]", "model.attention.backend=xla"]
    )
    assert c.optim.learning_rate == 1.0 and isinstance(c.optim.learning_rate, float)
    assert c.layout.fixed_partition == (3, 5) and c.model.attention.backend == "xla"
    assert base.optim.learning_rate == 1e-3 and base.layout.fixed_partition == ()
    with pytest.raises(ValueError, match=r"config.model.hidden_size = 'wide' is not allowed: a int"):
        config_lib.apply_overrides(base, ["model.hidden_size=wide"])
    with pytest.raises(ValueError, match="no value"):
        config_lib.apply_overrides(base, ["model.hidden_size"])


def test_runlocal_is_the_same_experiment_at_cpu_size():
    """``FILE.py:runlocal`` keeps the experiment's recipe (stage 1: per-frame clips, b2 0.999) at
    tiny_cpu's sizes."""
    local = config_lib.validate(config_lib.load_experiment("experiments/videogpt_stage1.py:runlocal"))
    tiny = load_experiment("tiny_cpu")
    assert local.layout.partition == "per_frame" and local.optim.b2 == 0.999
    assert local.model.to_dict() == tiny.model.to_dict()
    assert local.tokenizer.to_dict() == tiny.tokenizer.to_dict()
    with pytest.raises(ValueError, match="unknown experiment argument 'huge'"):
        config_lib.load_experiment("experiments/videogpt_stage1.py:huge")


def test_user_errors_are_one_line_without_a_traceback(tmp_path):
    """A bad value on `vgpt train` is one line on stderr, fast: no traceback, no compile."""
    result = _vgpt(
        "train", "--config", "experiments/tiny_cpu.py", "--workdir", str(tmp_path), "--config.mesh.fsdp=0"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "vgpt train: error: config.mesh.fsdp = 0 is not allowed: -1 (fill) or a positive integer"
    ]
