"""`vgpt sample --image`: pictures are the clean history frames, through the video history path."""

import av
import numpy as np
import pytest
from inference_fixture import moving_square, shared_checkpoints
from PIL import Image

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.sample.predict import read_pictures

FAST = ["--steps=2", "--clip-frames=2", "--window-frames=4"]


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def written(monkeypatch):
    """The frames `vgpt sample` hands to write_mp4, by output name (before H.264, which is lossy and
    codes a frame after the ones before it)."""
    frames = {}
    write_mp4 = video_io.write_mp4

    def keep(path, video, fps):
        frames[path.stem] = video
        write_mp4(path, video, fps)

    monkeypatch.setattr(video_io, "write_mp4", keep)
    return frames


def _sample(tmp_path, name, inputs, *flags):
    args = ["sample", "--checkpoint", str(shared_checkpoints()[1]), "--num-frames", "3", "--fps", "8"]
    status = cli.main([*args, *FAST, *inputs, *flags, "--output", str(tmp_path / f"{name}.mp4")])
    assert status == 0
    assert _frames(tmp_path / f"{name}.mp4").shape[:2] == (3 + ("--with-context" in flags), 40)


def test_a_picture_conditions_as_a_one_frame_video(tmp_path, written):
    """--image P and --video of a 1-frame video of P predict the same frames: the picture is history.

    The picture is the video's decoded frame (H.264 is lossy), saved losslessly as PNG, at a size
    that is not the model's 64x64, so both paths crop, fit and resize back.
    """
    video = tmp_path / "one.mp4"
    video_io.write_video(str(video), moving_square(1, 40, 56), fps=8)
    picture = tmp_path / "picture.png"
    Image.fromarray(_frames(video)[0]).save(picture)

    _sample(tmp_path, "video", ["--video", str(video), "--cond-frames", "1"])
    _sample(tmp_path, "picture", ["--image", str(picture)])
    assert written["picture"].shape == (3, 40, 56, 3) and written["picture"].std() > 0
    np.testing.assert_array_equal(written["picture"], written["video"])
    # ...and the picture matters: its negative predicts other frames
    Image.fromarray(255 - _frames(video)[0]).save(picture)
    _sample(tmp_path, "negative", ["--image", str(picture)])
    assert not np.array_equal(written["negative"], written["picture"])

    Image.fromarray(_frames(video)[0]).save(picture)
    _sample(tmp_path, "context", ["--image", str(picture)], "--with-context")
    np.testing.assert_array_equal(written["context"][0], np.asarray(Image.open(picture)))
    np.testing.assert_array_equal(written["context"][1:], written["picture"])


def test_pictures_are_read_as_rgb_frames_in_order(tmp_path):
    first, second = np.zeros((6, 4, 3), np.uint8), np.full((6, 4), 200, np.uint8)
    Image.fromarray(first).save(tmp_path / "a.png")
    Image.fromarray(second, mode="L").save(tmp_path / "b.jpg", quality=100)  # grey JPEG -> RGB
    frames = read_pictures([tmp_path / "a.png", tmp_path / "b.jpg"])
    assert frames.shape == (2, 6, 4, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], first)
    assert abs(int(frames[1].mean()) - 200) <= 1


def test_unusable_pictures_are_named(tmp_path):
    Image.new("RGB", (4, 6)).save(tmp_path / "small.png")
    Image.new("RGB", (6, 6)).save(tmp_path / "square.png")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(FileNotFoundError, match="the picture .*missing.png does not exist"):
        read_pictures([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="cannot read the picture .*notes.png"):
        read_pictures([tmp_path / "notes.png"])
    with pytest.raises(ValueError, match=r"differ in size \(small.png 4x6, square.png 6x6\)"):
        read_pictures([tmp_path / "small.png", tmp_path / "square.png"])


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--video", "in.mp4", "--cond-frames", "1"], "give --video or --image, not both"),
        (["--cond-frames", "1"], "--cond-frames is for --video: with --image, the K pictures"),
        ([], "cannot read the picture"),
    ],
)
def test_vgpt_sample_refuses_bad_image_arguments(tmp_path, capsys, flags, message):
    """Refused before any checkpoint is read (the checkpoint here does not exist)."""
    picture = tmp_path / "p.png"
    picture.write_bytes(b"\x89PNG broken")
    args = ["sample", "--checkpoint", str(tmp_path / "none"), "--num-frames", "2", "--image", str(picture)]
    assert cli.main([*args, *flags, "--output", str(tmp_path / "o.mp4")]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("variant,frames", [("", 16), (":runlocal", 8)])
def test_the_animation_experiment_lays_out_a_picture_then_one_clip(variant, frames):
    """(1, N - 1): the picture frame is clip 0, without loss; the rest one clip, sampled in one
    round after it. Rank 8 on the release backbone trains 32 layers x 147,456 adapter weights (as
    ucf101_class_to_video, without its class table)."""
    from vgpt_jax import config as config_lib
    from vgpt_jax.cli.info import info
    from vgpt_jax.models import layout

    c = config_lib.validate(config_lib.load_experiment(f"experiments/image_animation.py{variant}"))
    assert c.data.num_frames == frames and c.layout.first_clip_loss_weight == 0.0
    assert layout.clip_ids_from_partition(c.layout.fixed_partition).tolist() == [0] + [1] * (frames - 1)
    assert (c.sampling.clip_frames, c.sampling.window_frames) == (frames - 1, frames)
    assert c.lora.rank == 8 and c.condition.kind == "none"
    if not variant:
        assert (c.data.latent_height * 8, c.data.latent_width * 8) == (240, 320)
        assert info(c)["trainable_params"] == 32 * 147_456
