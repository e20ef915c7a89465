"""Loading for inference, `vgpt export` and `vgpt sample`: tiny_cpu with a tiny random tokenizer."""

import json
import shutil

import av
import jax
import numpy as np
import pytest
from inference_fixture import TOKENIZER_SCALING, flat, moving_square, shared_checkpoints, tiny_config

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.checkpoint.inference import export, load_for_inference
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.sample.predict import Predictor, predict_file, with_sampling

FAST = {"steps": 2, "clip_frames": 3, "window_frames": 7}  # 2 rounds of 3 frames for 6 frames


@pytest.fixture(scope="module")
def checkpoints():
    """(workdir, export of it, the parameters written to the workdir)."""
    return shared_checkpoints()


@pytest.fixture(scope="module")
def from_workdir(checkpoints):
    return load_for_inference(checkpoints[0])


def test_workdir_loads_the_saved_params_onto_the_mesh(checkpoints, from_workdir):
    config, params, _ = from_workdir
    assert flat(params).keys() == checkpoints[2].keys()
    for name, value in flat(params).items():
        np.testing.assert_array_equal(value, checkpoints[2][name], err_msg=name)
    # tiny_cpu's mesh puts all 8 devices on `data`: parameters are replicated over them
    assert all(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(params))
    assert config.sampling.clip_frames == 4  # the saved config, not a default


def test_the_tokenizer_weights_set_its_scaling(checkpoints, from_workdir):
    """The trained tokenizer's fitted scaling_factor is used, and exported, whatever the training
    config says (latents scaled otherwise are not the ones the model was trained on)."""
    config, _, tokenizer = from_workdir
    assert tokenizer.cfg.scaling_factor == config.tokenizer.scaling_factor == TOKENIZER_SCALING
    config, _, tokenizer = load_for_inference(checkpoints[1])
    assert tokenizer.cfg.scaling_factor == config.tokenizer.scaling_factor == TOKENIZER_SCALING


def test_load_onto_another_mesh(checkpoints):
    """Written on 8 devices, restored onto 4."""
    mesh = make_mesh(tiny_config().mesh, jax.devices()[:4])
    _, params, tokenizer = load_for_inference(checkpoints[0], mesh=mesh)
    assert {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(params)} == {4}
    assert tokenizer.mesh.size == 4


def test_export_round_trip_gives_the_same_params_and_frames(checkpoints, from_workdir):
    workdir_config, workdir_params, workdir_tokenizer = from_workdir
    config, params, tokenizer = load_for_inference(checkpoints[1])
    assert config.to_dict() == workdir_config.to_dict()
    for name, value in flat(params).items():
        np.testing.assert_array_equal(value, checkpoints[2][name], err_msg=name)
    for name, value in flat(tokenizer.params).items():  # the bundled tokenizer, not a new random init
        np.testing.assert_array_equal(value, flat(workdir_tokenizer.params)[name], err_msg=name)

    video = moving_square(4, 40, 56)
    config = with_sampling(config, **FAST)
    exported = Predictor(config, params, tokenizer).predict([video], 6)[0]
    original = Predictor(config, workdir_params, workdir_tokenizer).predict([video], 6)[0]
    assert exported.shape == (6, 40, 56, 3) and exported.dtype == np.uint8
    assert exported.std() > 0  # not a constant frame
    np.testing.assert_array_equal(exported, original)


def test_export_refuses_an_existing_export(checkpoints):
    with pytest.raises(FileExistsError, match="already holds"):
        export(checkpoints[0], checkpoints[1])


def test_load_names_a_folder_that_is_no_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a training workdir"):
        load_for_inference(tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # nothing created on the way


def test_vgpt_sample_writes_the_prediction(checkpoints, tmp_path, capsys):
    """40x56 input at 10 fps, every 2nd frame: 4 conditioning frames -> 6 predicted, 40x56 at 5 fps."""
    video, output = tmp_path / "in.mp4", tmp_path / "out" / "pred.mp4"
    video_io.write_video(str(video), moving_square(12, 40, 56), fps=10)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    args = ["--checkpoint", str(checkpoints[1]), "--video", str(video), "--output", str(output)]
    status = cli.main(["sample", *args, "--cond-frames", "4", "--num-frames", "6", "--stride", "2", *flags])
    assert status == 0, capsys.readouterr().err
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == 5.0
    assert len(frames) == 6 and frames[0].shape == (40, 56, 3)
    assert f"wrote 6 frames to {output} in " in capsys.readouterr().out


def test_vgpt_sample_refuses_an_existing_folder_as_output_before_sampling(tmp_path, monkeypatch):
    video, folder = tmp_path / "in.mp4", tmp_path / "out"
    video_io.write_video(str(video), moving_square(12, 40, 56), fps=10)
    folder.mkdir()

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(Predictor, "from_checkpoint", refuse)
    with pytest.raises(FileExistsError, match=f"--output {folder} is a folder: pass the path of the .mp4"):
        predict_file(tmp_path / "unused", video, folder, cond_frames=4, num_frames=2)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.mp4", "out"]  # no .partial anywhere


def test_vgpt_sample_names_a_short_video(checkpoints, tmp_path, capsys):
    video = tmp_path / "short.mp4"
    video_io.write_video(str(video), moving_square(5, 40, 56), fps=10)
    args = ["--checkpoint", str(checkpoints[1]), "--video", str(video), "--output", str(tmp_path / "o.mp4")]
    assert cli.main(["sample", *args, "--cond-frames", "4", "--num-frames", "2", "--stride", "2"]) == 1
    err = capsys.readouterr().err
    assert str(video) in err and "has 5 frames, fewer than the 7" in err


@pytest.mark.parametrize(
    "flags,expected", [([], 1.0), (["--cfg-scale", "2.5"], 2.5), (["--config.sampling.cfg_scale=3"], 3.0)]
)
def test_vgpt_sample_starts_from_the_checkpoints_sampling(
    checkpoints, tmp_path, monkeypatch, flags, expected
):
    """A checkpoint saved with sampling.cfg_scale = 1.0 samples at 1.0 (not the paper's 1.5) unless a
    flag names another value; the other fields stay the checkpoint's."""
    export_dir = tmp_path / "export"
    shutil.copytree(checkpoints[1], export_dir)
    saved = json.loads((export_dir / "config.json").read_text())
    saved["sampling"].update(cfg_scale=1.0, steps=3)
    (export_dir / "config.json").write_text(json.dumps(saved))
    seen = {}

    def fake_predict(self, videos, num_frames, progress=False, condition=None):
        seen.update(self.config.sampling.to_dict())
        return [np.zeros((num_frames, *videos[0].shape[1:]), np.uint8)]

    monkeypatch.setattr(Predictor, "predict", fake_predict)
    video = tmp_path / "in.mp4"
    video_io.write_video(str(video), moving_square(6, 40, 56), fps=10)
    args = ["--checkpoint", str(export_dir), "--video", str(video), "--output", str(tmp_path / "o.mp4")]
    assert cli.main(["sample", *args, "--cond-frames", "4", "--num-frames", "2", *flags]) == 0
    assert seen["cfg_scale"] == expected and seen["steps"] == 3
