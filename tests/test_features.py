"""Clean-stream features: per-layer hidden states of the tiny model, pooling, and `vgpt features`."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from data_pipelines import video_io
from vgpt_jax import config as config_lib
from vgpt_jax.evaluation import features
from vgpt_jax.models import layout
from vgpt_jax.models.video_gpt import (
    DecoderLayer,
    ModelConfig,
    VideoGPT,
    clean_stream_features,
    example_inputs,
)

NUM_LAYERS = 3


def tiny_model_config(scan_layers: bool):
    config = load_experiment("tiny_cpu")
    config.model.num_layers = NUM_LAYERS
    config.model.scan_layers = scan_layers
    return config_lib.validate(config)


@pytest.fixture(scope="module")
def unrolled_params():
    """Initialised parameters of the unrolled 3-layer tiny model, plus noise so that every layer
    changes the stream noticeably."""
    config = tiny_model_config(scan_layers=False)
    model = VideoGPT(ModelConfig.from_config(config))
    boxed = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *example_inputs(config, num_frames=2))
    rng = np.random.default_rng(3)
    return jax.tree.map(
        lambda x: (np.asarray(x) + 0.1 * rng.normal(size=x.shape)).astype(np.float32),
        nn.unbox(boxed["params"]),
    )


def stacked(params):
    """The unrolled parameters in scan_layers' layout: layers_i stacked on a leading axis."""
    backbone = dict(params["backbone"])
    layers = [backbone.pop(f"layers_{i}") for i in range(NUM_LAYERS)]
    backbone["layers"] = jax.tree.map(lambda *a: np.stack(a), *layers)
    return {**params, "backbone": backbone}


def unrolled(params, num_layers: int):
    """Stacked (scan_layers) parameters as layers_0 … layers_{n-1}, NumPy."""
    backbone = dict(params["backbone"])
    layers = backbone.pop("layers")
    for i in range(num_layers):
        backbone[f"layers_{i}"] = jax.tree.map(lambda a, i=i: np.asarray(a[i]), layers)
    return {**jax.tree.map(np.asarray, params), "backbone": backbone}


def full_model_hidden_states(params, latents, config=None):
    """Reference: the whole unrolled model's prefill of the history, every decoder layer's output
    captured by Flax (all layers run, the final norm too). -> (num_layers, B, F·L, D)."""
    config = tiny_model_config(scan_layers=False) if config is None else config
    num_layers = config.model.num_layers
    model = VideoGPT(ModelConfig.from_config(config))
    b, f = latents.shape[:2]
    attrs, positions = layout.history_layout(f, config_lib.sizes(config).tokens_per_frame)
    attrs = jax.tree.map(lambda a: jnp.broadcast_to(a, (b, a.shape[-1])), attrs)
    _, state = model.apply(
        {"params": params},
        latents,
        attrs,
        jnp.broadcast_to(positions, (b, positions.shape[-1])),
        method=VideoGPT.prefill,
        capture_intermediates=lambda module, _: isinstance(module, DecoderLayer),
    )
    captured = state["intermediates"]["backbone"]
    return np.stack([np.asarray(captured[f"layers_{i}"]["__call__"][0][0]) for i in range(num_layers)])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_layer_features_equal_the_full_models_hidden_states(unrolled_params, scan_layers):
    latents = np.random.default_rng(4).normal(size=(2, 3, 8, 8, 4)).astype(np.float32)
    want = full_model_hidden_states(unrolled_params, latents)
    b, f, block_len = 2, 3, 16 + 2
    assert want.shape == (NUM_LAYERS, b, f * block_len, 64)
    # the comparison has teeth: each layer moves the stream
    assert np.abs(want[1] - want[0]).max() > 0.1 and np.abs(want[2] - want[1]).max() > 0.1

    cfg = ModelConfig.from_config(tiny_model_config(scan_layers))
    params = stacked(unrolled_params) if scan_layers else unrolled_params
    extract = jax.jit(clean_stream_features, static_argnums=(0, 3))
    got = np.asarray(extract(cfg, params, latents, (3, 1, 2)))
    assert got.shape == (3, b, f, block_len, 64)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_deeper_layers_never_run(unrolled_params, scan_layers):
    """Layers after max(layers) are never read: NaN weights there leave the features finite."""
    latents = np.random.default_rng(5).normal(size=(1, 2, 8, 8, 4)).astype(np.float32)
    want = full_model_hidden_states(unrolled_params, latents)[0]
    params = dict(unrolled_params, backbone=dict(unrolled_params["backbone"]))
    for i in (1, 2):
        params["backbone"][f"layers_{i}"] = jax.tree.map(
            lambda a: np.full_like(a, np.nan), params["backbone"][f"layers_{i}"]
        )
    params = stacked(params) if scan_layers else params
    cfg = ModelConfig.from_config(tiny_model_config(scan_layers))
    got = np.asarray(jax.jit(clean_stream_features, static_argnums=(0, 3))(cfg, params, latents, (1,)))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [(0,), (1, 4), (-1,), ()])
def test_a_layer_outside_the_model_is_an_error_naming_its_depth(unrolled_params, layers):
    cfg = ModelConfig.from_config(tiny_model_config(False))
    latents = np.zeros((1, 2, 8, 8, 4), np.float32)
    with pytest.raises(ValueError, match="the model has 3 layers"):
        clean_stream_features(cfg, unrolled_params, latents, layers)


# --- pooling, clips and the extractor --------------------------------------------------------------


def test_pooling_and_pixel_patches_against_loops():
    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(2, 3, 4, 5))  # (B, F, S, D)
    np.testing.assert_allclose(
        features.pool_tokens(tokens, "mean"), tokens.reshape(2, 12, 5).mean(1), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        features.pool_tokens(tokens, "last"), tokens[:, 2].mean(1), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(features.pool_tokens(tokens, "frames"), tokens.mean(2), rtol=1e-5, atol=1e-6)

    pixels = rng.normal(size=(1, 2, 4, 6, 3))
    got = features.pixel_tokens(pixels, 2)
    assert got.shape == (1, 2, 6, 12)
    for row in range(2):
        for col in range(3):  # token (row, col) in raster order holds its 2x2 patch, pixel by pixel
            np.testing.assert_array_equal(
                got[0, 1, 3 * row + col],
                pixels[0, 1, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].reshape(-1),
            )


def test_views_spread_over_the_video_and_short_videos_repeat_their_last_frame():
    spec = features.FeatureSpec((1,), views=3, num_frames=4, stride=2)  # a clip spans 7 frames
    np.testing.assert_array_equal(
        features.clip_indices(20, spec), [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]
    )
    np.testing.assert_array_equal(features.clip_indices(5, spec), [[0, 2, 4, 4]] * 3)
    with pytest.raises(ValueError, match="choose one of mean, last, frames"):
        features.FeatureSpec((1,), pooling="max")


@pytest.fixture(scope="module")
def loaded():
    from inference_fixture import shared_checkpoints

    from vgpt_jax.checkpoint.inference import load_for_inference

    return load_for_inference(shared_checkpoints()[1])


@pytest.mark.slow
def test_extractor_equals_the_full_model_pooled_by_numpy(loaded):
    config, params, tokenizer = loaded
    spec = features.FeatureSpec((2, 1), num_frames=3, pixels=True)
    extractor = features.Extractor(config, params, tokenizer, tokenizer.mesh, spec, batch_per_device=1)
    assert extractor.batch_size == 8 and extractor.frame_size == (64, 64)
    clips = np.random.default_rng(7).integers(0, 256, (10, 3, 64, 64, 3), dtype=np.uint8)  # 2 batches
    got = extractor(clips)
    assert sorted(got) == ["L1", "L2", "pixels"]

    pixels = clips.astype(np.float64) / 127.5 - 1.0
    latents = np.asarray(tokenizer.encode(pixels.astype(np.float32)))  # posterior mean
    reference_config = config_lib.with_fields(config, {"model.scan_layers": False})
    hidden = full_model_hidden_states(unrolled(params, 2), latents, reference_config)
    patches = hidden.reshape(2, 10, 3, 18, -1)[:, :, :, 1:-1]  # (layers, B, F, S, D) without markers
    for layer in (1, 2):
        np.testing.assert_allclose(
            got[f"L{layer}"], patches[layer - 1].mean(axis=(1, 2)), rtol=1e-4, atol=1e-5
        )
    # the pixel baseline: each token's 16x16 patch (2x2 latent cells of 8x downsampling), averaged
    cells = pixels.reshape(10, 3, 4, 16, 4, 16, 3).transpose(0, 1, 2, 4, 3, 5, 6).reshape(10, 3 * 16, 768)
    np.testing.assert_allclose(got["pixels"], cells.mean(axis=1), rtol=1e-5, atol=1e-6)


def write_square_videos(folder, count: int, frames: int = 6):
    from inference_fixture import moving_square

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        video_io.write_video(
            str(folder / f"v{i}.mp4"), np.roll(moving_square(frames, 64, 64), 8 * i, axis=1), 8
        )
        rows.append(json.dumps({"video": f"videos/v{i}.mp4", "label": i % 2}))
    return rows


@pytest.mark.slow
def test_vgpt_features_writes_resumes_and_refuses_mixing(tmp_path, monkeypatch, capsys, loaded):
    from inference_fixture import shared_checkpoints

    from vgpt_jax import cli

    rows = write_square_videos(tmp_path / "videos", 3)
    (tmp_path / "videos" / "broken.mp4").write_text("not a video")
    rows += ['{"video": "videos/broken.mp4", "label": 1}', '{"video": "videos/gone.mp4", "label": 0}', "{"]
    manifest = tmp_path / "labels.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = [
        "features",
        "--checkpoint",
        str(shared_checkpoints()[1]),
        "--data",
        str(manifest),
        "--output-dir",
        str(out),
    ]
    common = ["--frames", "4", "--views", "2", "--chunk-videos", "2", "--pixels"]
    assert cli.main([*argv, "--layers", "2,1", *common]) == 0
    with np.load(out / "features_L2.npz") as saved:
        assert saved["features"].shape == (3, 64) and saved["features"].dtype == np.float32
        assert saved["video_ids"].tolist() == ["videos/v0.mp4", "videos/v1.mp4", "videos/v2.mp4"]
        assert saved["labels"].tolist() == [0, 1, 0]
        meta = json.loads(str(saved["meta"]))
        assert meta["spec"]["layers"] == [1, 2] and meta["features"] == "L2"
        layer2 = saved["features"]
    with np.load(out / "features_pixels.npz") as saved:
        assert saved["features"].shape == (3, 768)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["chunk_000000.npz", "chunk_000001.npz"]
    with np.load(out / "shards" / "chunk_000001.npz") as saved:  # v2 and the broken video
        assert saved["unreadable"].tolist() == ["videos/broken.mp4"]

    # the two views average: the first and last 4 of the 6 frames, each a clip of its own
    config, params, tokenizer = loaded
    spec = features.FeatureSpec((2,), num_frames=4)
    one = features.Extractor(config, params, tokenizer, tokenizer.mesh, spec, batch_per_device=1)
    frames = video_io.read_frames(str(tmp_path / "videos" / "v1.mp4"), range(6))
    views = one(np.stack([frames[:4], frames[2:]]))["L2"]
    np.testing.assert_allclose(layer2[1], views.mean(axis=0), rtol=1e-5, atol=1e-6)

    # resumed: finished chunks are not computed again; a lost chunk is
    def fail(*args, **kwargs):
        raise AssertionError("a finished chunk was extracted again")

    monkeypatch.setattr(features, "extract_chunk", fail)
    assert cli.main([*argv, "--layers", "1,2", *common]) == 0  # the same layers in another order
    (out / "shards" / "chunk_000000.npz").unlink()
    monkeypatch.undo()
    assert cli.main([*argv, "--layers", "1,2", *common]) == 0
    with np.load(out / "features_L2.npz") as saved:
        np.testing.assert_allclose(saved["features"], layer2, rtol=1e-6)

    # other layers, pooling or weights in the same folder are refused, naming the difference
    capsys.readouterr()
    assert cli.main([*argv, "--layers", "1", *common]) == 1
    assert "another extraction (spec: {'layers': [1, 2]" in capsys.readouterr().err
    assert cli.main([*argv, "--layers", "1,2", *common, "--pooling", "last"]) == 1
    assert cli.main([*argv, "--layers", "1,2", *common, "--random-init", "0"]) == 1
    assert cli.main([*argv, "--layers", "3", *common]) == 1
    assert "the model has 2 layers" in capsys.readouterr().err
