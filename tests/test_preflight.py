"""What users get wrong is refused by config.validate or by the preflight, before the mesh or any
compilation, with one message that names the fix."""

import json
import os

import numpy as np
import pytest
from conftest import load_experiment, write_text_tokenizer
from PIL import Image

from data_pipelines import video_io
from data_pipelines.pipeline import open_source
from vgpt_jax import config as config_lib
from vgpt_jax.train import launch, preflight


def _video(path, frames=12, size=64):
    rng = np.random.default_rng(0)
    video_io.write_video(str(path), rng.integers(0, 256, (frames, size, size, 3), np.uint8), fps=8)
    return path


def _config(source_path=""):
    c = load_experiment("tiny_cpu")
    c.data.update(source_path=str(source_path), frame_interval=1, min_side=32)
    return c


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optim.learning_rate", -1e-4, "optim.learning_rate = -0.0001 is not allowed: >= 0"),
        ("optim.b1", 1.0, r"optim.b1 = 1.0 is not allowed: a decay rate in \[0, 1\)"),
        ("optim.b2", -0.1, "optim.b2 = -0.1 is not allowed"),
        ("optim.eps", 0.0, "optim.eps = 0.0 is not allowed: > 0"),
        ("optim.weight_decay", -0.1, "optim.weight_decay = -0.1 is not allowed: >= 0"),
        ("tokenizer.optim.learning_rate", -1.0, "tokenizer.optim.learning_rate = -1.0 is not allowed"),
        ("tokenizer.optim.b2", 1.5, "tokenizer.optim.b2 = 1.5 is not allowed"),
    ],
)
def test_optimizer_signs_and_ranges(field, value, message):
    c = _config()
    section, name = field.rsplit(".", 1)
    (c.tokenizer.optim if section == "tokenizer.optim" else c.optim)[name] = value
    with pytest.raises(ValueError, match=message):
        config_lib.validate(c)


def test_a_fixed_partition_must_cover_the_frames():
    c = _config()
    c.layout.update(partition="fixed", fixed_partition=(3, 3))
    with pytest.raises(
        ValueError, match=r"fixed_partition = \(3, 3\).*sum to data.num_frames = 8 \(they sum to 6\)"
    ):
        config_lib.validate(c)
    c.layout.fixed_partition = ()
    with pytest.raises(ValueError, match="fixed_partition = \\(\\) .*when layout.partition is 'fixed'"):
        config_lib.validate(c)
    c.layout.fixed_partition = (3, 5)
    config_lib.validate(c)


@pytest.fixture
def no_mesh(monkeypatch):
    """launch.run must fail before it builds the mesh (and so before anything compiles)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the preflight let a bad run reach the mesh")

    monkeypatch.setattr(launch, "make_mesh", refuse)


def test_data_errors_are_refused_before_the_mesh(tmp_path, no_mesh):
    with pytest.raises(ValueError, match="config.data.source_path is empty: pass"):
        launch.run(_config(), str(tmp_path / "w"))
    with pytest.raises(FileNotFoundError, match="source_path=.*missing does not exist"):
        launch.run(_config(tmp_path / "missing"), str(tmp_path / "w"))

    # a JPEG renamed .mp4 opens and decodes one frame, but holds no clip of 8 frames
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(jpeg / "still.jpg")
    os.rename(jpeg / "still.jpg", jpeg / "clip.mp4")
    with pytest.raises(ValueError, match="no usable clip .* 1 frames are too short for 8 frames"):
        launch.run(_config(jpeg), str(tmp_path / "w"))

    # a binary file given where an index is expected
    binary = tmp_path / "clips.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="is not a text index: pass a folder of videos, one video file"):
        launch.run(_config(binary), str(tmp_path / "w"))


def _text_config(tmp_path, rows):
    """tiny_cpu text-conditioned (4 tokens) on a manifest of ``rows`` whose videos exist."""
    for row in rows:
        _video(tmp_path / row["video"])
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    c = _config(manifest)
    folder = write_text_tokenizer(tmp_path / "release")
    c.condition.update(kind="text", max_text_tokens=4, text_tokenizer=str(folder))
    return c


def test_text_rows_that_cannot_condition_are_named_before_the_mesh(tmp_path, no_mesh):
    good = {"video": "good.mp4", "text": "a ball drops"}
    c = _text_config(tmp_path, [good, {"video": "labelled.mp4", "label": 0}])
    with pytest.raises(ValueError, match=r'labelled.mp4 in the manifest .*manifest.jsonl has no "text"'):
        launch.run(c, str(tmp_path / "w"))
    c = _text_config(tmp_path, [good, {"video": "long.mp4", "text": "a ball drops a ball"}])
    with pytest.raises(
        ValueError,
        match=r"long.mp4 in the manifest .*: the text .* is 5 tokens, more than .*max_text_tokens = 4",
    ):
        launch.run(c, str(tmp_path / "w"))

    c = _text_config(tmp_path, [good])
    c.condition.text_tokenizer = ""
    with pytest.raises(FileNotFoundError, match="set config.condition.text_tokenizer"):
        launch.run(c, str(tmp_path / "w"))
    c = _text_config(tmp_path, [good])
    c.data.source_path = str(tmp_path)  # a folder: classes, no text
    with pytest.raises(ValueError, match=r"condition.kind = 'text' reads texts from a JSONL manifest"):
        launch.run(c, str(tmp_path / "w"))


def test_a_single_video_file_is_a_one_video_dataset(tmp_path):
    video = _video(tmp_path / "one.mp4")
    source = open_source(str(video))
    assert len(source) == 1 and source[0].path == str(video)
    c = _config(video)
    assert preflight.open_training_source(c, preflight.clip_spec(c, 8)) is not None


def test_a_workdir_that_is_a_file_or_locked_is_refused_before_the_mesh(tmp_path, no_mesh):
    c = _config(_video(tmp_path / "one.mp4"))
    with pytest.raises(FileExistsError, match="the workdir .* is a file: pass a folder"):
        launch.run(c, str(tmp_path / "one.mp4"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "train.lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": {os.getppid()}}}')
    with pytest.raises(FileExistsError, match=f"in use by another trainer .*pid {os.getppid()}"):
        launch.run(c, str(tmp_path / "w"))


def test_an_unwritable_workdir_is_refused():
    """sysfs takes no new folders, from root either (which writes anywhere else)."""
    with pytest.raises(
        PermissionError, match=r"the workdir /sys/vgpt-workdir cannot be written \(.+\): pass a"
    ):
        preflight.check_workdir("/sys/vgpt-workdir")
