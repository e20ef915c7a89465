"""`vgpt sample --class-id / --prompt` and Predictor's conditions, on tiny conditioned workdirs."""

import av
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from conftest import load_experiment, write_text_tokenizer
from inference_fixture import make_workdir, moving_square
from PIL import Image

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.checkpoint.inference import load_for_inference
from vgpt_jax.sample.predict import Predictor, condition_ids, null_condition_ids, with_sampling

NUM_CLASSES = 3
FAST = {"steps": 2, "clip_frames": 2, "window_frames": 4}


@pytest.fixture(scope="module")
def class_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_workdir")
    make_workdir(root, ("condition.kind=class", f"condition.num_classes={NUM_CLASSES}"))
    return root


@pytest.fixture(scope="module")
def text_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_workdir")
    folder = write_text_tokenizer(root / "release")
    make_workdir(
        root / "run",
        ("condition.kind=text", "condition.max_text_tokens=4", f"condition.text_tokenizer={folder}"),
    )
    return root / "run"


def _swapped_rows(table, i, j):
    order = np.arange(table.shape[0])
    order[[i, j]] = order[[j, i]]
    return table[jnp.asarray(order)]


def test_the_class_id_picks_its_row_of_the_table(class_workdir):
    """Swapping two rows of class_embed swaps what their ids generate, bit for bit (same noise per
    row); the two classes' videos differ, so the id reaches the model."""
    config, params, tokenizer = load_for_inference(class_workdir)
    config = with_sampling(config, cfg_scale=1.5, condition_scale=2.0, **FAST)
    predictor = Predictor(config, params, tokenizer)
    videos = predictor.generate(condition_ids(config, class_ids=[0, 1]), 3)
    assert [v.shape for v in videos] == [(3, 64, 64, 3)] * 2 and videos[0].dtype == np.uint8
    assert not np.array_equal(videos[0], videos[1])
    swapped = {**params, "class_embed": _swapped_rows(params["class_embed"], 0, 1)}
    swapped_videos = Predictor(config, swapped, tokenizer).generate(
        condition_ids(config, class_ids=[1, 0]), 3
    )
    for got, want in zip(swapped_videos, videos, strict=True):
        np.testing.assert_array_equal(got, want)
    # a conditioned model is never run without its prefix
    with pytest.raises(ValueError, match="condition ids missing for a model whose condition.kind is 'class'"):
        predictor.predict([moving_square(2, 64, 64)], 2)
    with pytest.raises(ValueError, match="1 conditions for 2 videos"):
        predictor.predict([moving_square(2, 64, 64)] * 2, 2, condition=np.zeros((1,), np.int32))


def test_the_prompt_s_words_pick_their_rows_of_the_token_table(text_workdir):
    """As above for text: 'drops' and 'rolls' (ids 6 and 7) swapped in the Phi-3 token table."""
    config, params, tokenizer = load_for_inference(text_workdir)
    config = with_sampling(config, cfg_scale=1.5, condition_scale=2.0, **FAST)
    prompts = ["a ball drops", "a ball rolls"]
    videos = Predictor(config, params, tokenizer).generate(condition_ids(config, prompts=prompts), 3)
    assert not np.array_equal(videos[0], videos[1])
    table = params["embed_tokens"]["embedding"]
    swapped = {**params, "embed_tokens": {"embedding": _swapped_rows(table, 6, 7)}}
    swapped_videos = Predictor(config, swapped, tokenizer).generate(
        condition_ids(config, prompts=prompts[::-1]), 3
    )
    for got, want in zip(swapped_videos, videos, strict=True):
        np.testing.assert_array_equal(got, want)


def _frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], float(stream.average_rate)


@pytest.mark.parametrize(
    "workdir,flag", [("class_workdir", ["--class-id", "1"]), ("text_workdir", ["--prompt", "a ball"])]
)
def test_vgpt_sample_from_a_condition(workdir, flag, request, tmp_path, capsys):
    checkpoint = request.getfixturevalue(workdir)
    output = tmp_path / "out.mp4"
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    args = ["sample", "--checkpoint", str(checkpoint), "--num-frames", "3", *flag, *fast]
    assert cli.main([*args, "--output", str(output)]) == 0, capsys.readouterr().err
    frames, fps = _frames(output)
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert fps == 8.0  # the checkpoint's train.sample_fps
    assert f"wrote 3 frames to {output}" in capsys.readouterr().out


def test_vgpt_sample_animates_a_picture_of_a_class(class_workdir, tmp_path, capsys):
    """--image with --class-id: the picture is the history, the class the prefix; the output has the
    picture's size."""
    picture, output = tmp_path / "p.png", tmp_path / "out.mp4"
    Image.fromarray(moving_square(1, 48, 80)[0]).save(picture)
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    args = ["sample", "--checkpoint", str(class_workdir), "--image", str(picture), "--class-id", "2"]
    status = cli.main([*args, "--num-frames", "3", *fast, "--output", str(output)])
    assert status == 0, capsys.readouterr().err
    frames, _ = _frames(output)
    assert len(frames) == 3 and frames[0].shape == (48, 80, 3)


def test_vgpt_sample_asks_a_conditioned_checkpoint_for_its_condition(class_workdir, tmp_path, capsys):
    video = tmp_path / "in.mp4"
    video_io.write_video(str(video), moving_square(4, 64, 64), fps=8)
    args = ["sample", "--checkpoint", str(class_workdir), "--video", str(video), "--cond-frames", "2"]
    assert cli.main([*args, "--num-frames", "2", "--output", str(tmp_path / "o.mp4")]) == 1
    assert "class-conditioned (3 classes): pass --class-id K, 0 <= K < 3, or K = 3" in capsys.readouterr().err


def test_vgpt_sample_needs_a_video_or_a_condition(tmp_path, capsys):
    args = ["sample", "--checkpoint", str(tmp_path), "--num-frames", "2", "--output", str(tmp_path / "o.mp4")]
    assert cli.main(args) == 1
    wanted = "pass --video (video prediction), --image (image animation), --class-id or --prompt"
    assert wanted in capsys.readouterr().err
    assert cli.main([*args, "--video", str(tmp_path / "in.mp4")]) == 1
    assert "--video needs --cond-frames K" in capsys.readouterr().err


def _config(kind, **fields):
    config = load_experiment("tiny_cpu")
    config.condition.update(kind=kind, num_classes=NUM_CLASSES, max_text_tokens=4, **fields)
    return config


def test_conditions_are_checked_against_the_checkpoint(tmp_path):
    assert condition_ids(_config("none")) is None
    with pytest.raises(ValueError, match=r"--class-id needs a class-conditioned checkpoint; .* 'none'"):
        condition_ids(_config("none"), class_ids=[0])
    with pytest.raises(ValueError, match=r"--prompt needs a text-conditioned checkpoint; .* 'class'"):
        condition_ids(_config("class"), class_ids=[0], prompts=["a"])

    ids = condition_ids(_config("class"), class_ids=[0, 2, 3])  # 3: the null class
    assert ids.dtype == np.int32 and ids.tolist() == [0, 2, 3]
    for wrong in (-1, 4):
        with pytest.raises(ValueError, match=f"class id {wrong} is outside the table: 0 <= K < 3"):
            condition_ids(_config("class"), class_ids=[1, wrong])

    text = _config("text", text_tokenizer=str(write_text_tokenizer(tmp_path / "release")))
    ids = condition_ids(text, prompts=["a ball drops", "rolls"])
    assert ids.dtype == np.int32 and ids.tolist() == [[4, 5, 6, -1], [7, -1, -1, -1]]  # by hand
    with pytest.raises(ValueError, match="is 5 tokens, more than condition.max_text_tokens = 4"):
        condition_ids(text, prompts=["a ball drops a ball"])
    with pytest.raises(ValueError, match="text-conditioned: pass --prompt TEXT"):
        condition_ids(text)
    with pytest.raises(
        FileNotFoundError, match=r"no tokenizer.json in .*set config.condition.text_tokenizer"
    ):
        condition_ids(_config("text", text_tokenizer=str(tmp_path)), prompts=["a"])


def test_null_condition_ids():
    assert null_condition_ids(_config("none"), 2) is None
    assert null_condition_ids(_config("class"), 2).tolist() == [3, 3]
    assert null_condition_ids(_config("text"), 1).tolist() == [[-1, -1, -1, -1]]


def test_a_token_past_the_model_s_table_is_named():
    from data_pipelines.text_tokens import text_ids

    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "big": 9}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="gives id 9 for 'big', past the model's 8 rows"):
        text_ids(tokenizer, "big", 4, vocab_size=8)
    assert text_ids(tokenizer, "big", 2, vocab_size=10).tolist() == [9, -1]
