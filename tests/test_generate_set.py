"""`vgpt generate-set`: class-balanced, resumable sets of generated videos, each a distinct sample."""

import json

import av
import jax
import numpy as np
import pytest
from inference_fixture import make_workdir, shared_checkpoints

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.checkpoint.inference import checkpoint_config, load_for_inference
from vgpt_jax.cli.generate_set import Video, plan
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.sample.predict import Predictor, condition_ids, with_sampling

NUM_CLASSES = 3
NAMES = ["Archery", "Bowling", "Diving"]
FAST = {"steps": 2, "clip_frames": 2, "window_frames": 4}
FAST_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]


@pytest.fixture(scope="module")
def class_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_workdir")
    make_workdir(root, ("condition.kind=class", f"condition.num_classes={NUM_CLASSES}"))
    return root


@pytest.fixture
def written(monkeypatch):
    """The frames each write_mp4 call is given, by path: H.264 encoding is not bit-reproducible here
    (the same frames written twice in one process can decode a few levels apart)."""
    frames = {}
    write_mp4 = video_io.write_mp4

    def keep(path, video, fps):
        frames[path] = video
        write_mp4(path, video, fps)

    monkeypatch.setattr(video_io, "write_mp4", keep)
    return frames


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _generate_set(checkpoint, out, num, *flags):
    args = ["generate-set", "--checkpoint", str(checkpoint), "--output-dir", str(out), "--num", str(num)]
    return cli.main([*args, "--num-frames", "3", *FAST_FLAGS, *flags])


def test_a_class_balanced_set_and_its_resumption(class_workdir, tmp_path, capsys, monkeypatch, written):
    index = tmp_path / "classInd.txt"
    index.write_text("".join(f"{i} {name}\n" for i, name in enumerate(NAMES, 1)))
    out = tmp_path / "set"
    flags = ["--class-balanced", "--class-index", str(index)]
    assert _generate_set(class_workdir, out, 2 * NUM_CLASSES, *flags) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "batch 1/1: wrote 6 videos, kept 0" in printed
    assert "s of it compiling" in printed.splitlines()[-1]  # the run's wall and compile time

    # what `vgpt fvd --class-balanced` reads: a video's class is its first sub-folder
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert files == [f"{name}/{i}.mp4" for name in NAMES for i in (0, 1)]
    assert {_frames(out / name).shape for name in files} == {(3, 64, 64, 3)}
    videos = dict(written)
    assert len({v.tobytes() for v in videos.values()}) == 6  # every video its own sample, a class's too
    settings = json.loads((out / "generate_set.json").read_text())
    assert settings["num"] == 6 and settings["sampling"]["steps"] == 2
    assert settings["videos"][:2] == [
        {"file": "Archery/0.mp4", "class_id": 0},
        {"file": "Bowling/0.mp4", "class_id": 1},
    ]

    # a rerun keeps every video without loading the model; a lost video comes back as it was
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "from_checkpoint", refuse)
        assert _generate_set(class_workdir, out, 6, *flags) == 0
    assert "batch 1/1: wrote 0 videos, kept 6" in capsys.readouterr().out
    (out / "Diving/1.mp4").unlink()
    assert _generate_set(class_workdir, out, 6, *flags) == 0
    assert "batch 1/1: wrote 1 videos, kept 5" in capsys.readouterr().out
    np.testing.assert_array_equal(written[out / "Diving/1.mp4"], videos[out / "Diving/1.mp4"])

    # other settings in the same folder would not be one set
    assert _generate_set(class_workdir, out, 6, *flags, "--seed", "7") == 1
    assert "a set made with other settings (sampling: not as in generate_set.json)" in capsys.readouterr().err


def test_a_set_that_does_not_split_over_the_classes_is_refused(class_workdir, tmp_path, capsys):
    assert _generate_set(class_workdir, tmp_path / "set", 7, "--class-balanced") == 1
    assert "--num 7 does not split evenly over the 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "set").exists()  # refused before anything is written
    assert _generate_set(class_workdir, tmp_path / "set", 6) == 1
    assert "condition.kind = 'class' (3 classes): pass --class-balanced" in capsys.readouterr().err


def test_plans_name_classes_and_cycle_prompts():
    assert plan("class", 4, 2, class_balanced=True) == [
        Video("0/0.mp4", 0),
        Video("1/0.mp4", 1),
        Video("0/1.mp4", 0),
        Video("1/1.mp4", 1),
    ]
    assert plan("text", 3, prompts=["a", "b"]) == [Video(f"{i}.mp4", prompt=p) for i, p in enumerate("aba")]
    assert plan("none", 2) == [Video("0.mp4"), Video("1.mp4")]
    with pytest.raises(ValueError, match="--prompts is for a text-conditioned checkpoint; .* 'none'"):
        plan("none", 2, prompts=["a"])
    with pytest.raises(ValueError, match="text-conditioned: pass --prompts FILE"):
        plan("text", 2)
    with pytest.raises(ValueError, match="--class-balanced is for a class-conditioned checkpoint; .* 'text'"):
        plan("text", 2, prompts=["a"], class_balanced=True)


def test_batches_draw_distinct_noise_and_resume_as_one_call(class_workdir):
    """Batches of 2 (a 2-device mesh) of one class: without the batch index in the seed, the second
    batch would repeat the first. Generating from the second batch on gives the same videos."""
    mesh = make_mesh(checkpoint_config(class_workdir).mesh, jax.devices()[:2])
    config, params, tokenizer = load_for_inference(class_workdir, mesh=mesh)
    config = with_sampling(config, **FAST)
    predictor = Predictor(config, params, tokenizer, tokenizer.mesh)
    assert predictor.batch_size == 2
    ids = condition_ids(config, class_ids=[1] * 4)
    videos = predictor.generate(ids, 3)
    assert not np.array_equal(videos[0], videos[2]) and not np.array_equal(videos[1], videos[3])
    for resumed, whole in zip(predictor.generate(ids[2:], 3, first_batch=1), videos[2:], strict=True):
        np.testing.assert_array_equal(resumed, whole)


def test_an_unconditioned_set(tmp_path, capsys):
    out = tmp_path / "set"
    assert _generate_set(shared_checkpoints()[1], out, 2) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["0.mp4", "1.mp4", "generate_set.json"]
    first, second = _frames(out / "0.mp4"), _frames(out / "1.mp4")
    assert first.shape == (3, 64, 64, 3) and not np.array_equal(first, second)
