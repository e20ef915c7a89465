"""`vgpt sample --class-id` and Predictor's class conditions, on a tiny class-conditioned workdir."""

import av
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment
from inference_fixture import make_workdir, moving_square

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.checkpoint.inference import load_for_inference
from vgpt_jax.sample.predict import Predictor, check_class_ids, with_sampling

NUM_CLASSES = 3
FAST = {"steps": 2, "clip_frames": 2, "window_frames": 4}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_workdir")
    make_workdir(root, ("condition.kind=class", f"condition.num_classes={NUM_CLASSES}"))
    return root


def test_the_class_id_picks_its_row_of_the_table(workdir):
    """Swapping two rows of class_embed swaps what their ids generate, bit for bit (same noise per
    row); the two classes' videos differ, so the id reaches the model."""
    config, params, tokenizer = load_for_inference(workdir)
    config = with_sampling(config, cfg_scale=1.5, condition_scale=2.0, **FAST)
    videos = Predictor(config, params, tokenizer).generate([0, 1], 3)
    assert [v.shape for v in videos] == [(3, 64, 64, 3)] * 2 and videos[0].dtype == np.uint8
    assert not np.array_equal(videos[0], videos[1])
    swapped = {**params, "class_embed": params["class_embed"][jnp.asarray([1, 0, 2, 3])]}
    swapped_videos = Predictor(config, swapped, tokenizer).generate([1, 0], 3)
    for got, want in zip(swapped_videos, videos, strict=True):
        np.testing.assert_array_equal(got, want)


def test_vgpt_sample_class_to_video(workdir, tmp_path, capsys):
    output = tmp_path / "class1.mp4"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    args = ["sample", "--checkpoint", str(workdir), "--class-id", "1", "--num-frames", "3", *flags]
    assert cli.main([*args, "--output", str(output)]) == 0, capsys.readouterr().err
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == 8.0  # the checkpoint's train.sample_fps
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert f"wrote 3 frames to {output}" in capsys.readouterr().out

    # a video without its class: the checkpoint is class-conditioned, so the flag is asked for
    video = tmp_path / "in.mp4"
    video_io.write_video(str(video), moving_square(4, 64, 64), fps=8)
    args = ["sample", "--checkpoint", str(workdir), "--video", str(video), "--cond-frames", "2"]
    assert cli.main([*args, "--num-frames", "2", "--output", str(tmp_path / "o.mp4")]) == 1
    assert "class-conditioned (3 classes): pass --class-id K, 0 <= K < 3, or K = 3" in capsys.readouterr().err


def test_vgpt_sample_needs_a_video_or_a_class(tmp_path, capsys):
    args = ["sample", "--checkpoint", str(tmp_path), "--num-frames", "2", "--output", str(tmp_path / "o.mp4")]
    assert cli.main(args) == 1
    assert "pass --video (video prediction) or --class-id (class-to-video)" in capsys.readouterr().err
    assert cli.main([*args, "--video", str(tmp_path / "in.mp4")]) == 1
    assert "--video needs --cond-frames K" in capsys.readouterr().err


def test_class_ids_are_checked_against_the_checkpoint():
    plain = load_experiment("tiny_cpu")
    check_class_ids(plain, None)
    with pytest.raises(ValueError, match=r"--class-id needs a class-conditioned checkpoint; .* 'none'"):
        check_class_ids(plain, [0])
    classes = load_experiment("tiny_cpu")
    classes.condition.update(kind="class", num_classes=NUM_CLASSES)
    check_class_ids(classes, [0, 2, 3])  # 3: the null class
    for wrong in (-1, 4):
        with pytest.raises(ValueError, match=f"class id {wrong} is outside the table: 0 <= K < 3"):
            check_class_ids(classes, [1, wrong])
    text = load_experiment("tiny_cpu")
    text.condition.kind = "text"
    with pytest.raises(ValueError, match="condition.kind = 'text': only 'class' can be sampled"):
        check_class_ids(text, None)
