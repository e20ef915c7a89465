"""Rejection and redraw, bad files, Grain loader state, per-host sharding, global batches on 8 devices."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import tokenizers
from conftest import write_text_tokenizer
from jax.sharding import PartitionSpec

from data_pipelines import pipeline, video_io
from data_pipelines.array_record_source import ClipRecordSource, ClipRecordWriter
from data_pipelines.clip_sampler import REJECTED, SKIPPED, ClipSpec, SampleClip
from data_pipelines.video_source import VideoFileSource
from vgpt_jax.parallel.mesh import make_mesh


def mesh_of(data=1, fsdp=-1, tensor=1):
    return make_mesh(ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor, "sequence": 1}))


def labelled_clips(directory, sizes):
    """Records whose pixels say (record index, frame index) in channels 0 and 1; sizes = (T, H, W)."""
    with ClipRecordWriter(str(directory)) as writer:
        for i, (t, h, w) in enumerate(sizes):
            video = np.zeros((t, h, w, 3), np.uint8)
            video[..., 0] = i
            video[..., 1] = np.arange(t, dtype=np.uint8)[:, None, None]
            writer.write({"video": video})
    return ClipRecordSource(str(directory))


def record_of(clip):
    return int(clip[0, 0, 0, 0])


def test_rejected_videos_are_redrawn_deterministically(tmp_path):
    sizes = [
        (8, 120, 160),  # 0: side 120 < 128
        (8, 128, 520),  # 1: aspect 520 / 128 = 4.06 > 4
        (3, 128, 128),  # 2: 3 frames < (4 - 1) * 1 + 1
        (8, 128, 128),  # 3: good
        (6, 128, 128),  # 4: good
    ]
    source = labelled_clips(tmp_path, sizes)
    sampler = SampleClip(source, ClipSpec(num_frames=4, interval=1, height=128, width=128))
    for start in range(5):
        for seed in range(4):
            out = sampler.random_map(source[start], np.random.default_rng(seed))
            again = sampler.random_map(source[start], np.random.default_rng(seed))
            np.testing.assert_array_equal(out["video"], again["video"])
            assert out[REJECTED] == again[REJECTED] and out[SKIPPED] == 0
            assert record_of(out["video"]) in (3, 4)
            assert (out[REJECTED] >= 1) == (start < 3)
            frames = out["video"][:, 0, 0, 1].astype(int)
            assert list(np.diff(frames)) == [1, 1, 1]  # consecutive frames at interval 1
            assert 0 <= frames[0] <= sizes[record_of(out["video"])][0] - 4


def test_unreadable_files_are_skipped_counted_and_never_retried_forever(tmp_path):
    frames = [np.full((128, 128, 3), 100, np.uint8) for _ in range(10)]
    video_io.write_video(str(tmp_path / "good.mp4"), frames, 10)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "a_empty.mp4").write_bytes(b"")
    (tmp_path / "b_text.mp4").write_text("no video here")
    (tmp_path / "c_cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "d_unsupported.avi").write_bytes(os.urandom(2000))
    source = VideoFileSource(str(tmp_path))  # the good video makes the dataset acceptable
    assert len(source) == 5
    sampler = SampleClip(source, ClipSpec(num_frames=4, interval=2, height=128, width=128))
    for i in range(4):  # every bad file
        out = sampler.random_map(source[i], np.random.default_rng(i))
        assert out[SKIPPED] >= 1
        assert out["video"].shape == (4, 128, 128, 3) and abs(int(out["video"].mean()) - 100) <= 2
    os.remove(tmp_path / "good.mp4")  # now nothing is readable: the sampler gives up after max_draws
    sampler = SampleClip(source, ClipSpec(num_frames=4, interval=2, max_draws=12))
    with pytest.raises(RuntimeError, match=r"no usable clip after 12 draws.*12 unreadable, 0 rejected"):
        sampler.random_map(source[0], np.random.default_rng(0))


def batches(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_loader_state_gives_the_same_next_batch(tmp_path):
    source = labelled_clips(tmp_path, [(6, 16, 16)] * 20)
    spec = ClipSpec(num_frames=3, interval=2, min_side=8)

    def loader():
        return pipeline.make_loader(source, spec, batch_size=4, seed=3)

    first = iter(loader())
    batches(first, 7)  # crosses the first epoch (5 batches)
    state = first.get_state()
    expected = batches(first, 3)
    resumed = iter(loader())
    resumed.set_state(state)
    for want, got in zip(expected, batches(resumed, 3), strict=True):
        np.testing.assert_array_equal(want["video"], got["video"])
    # epochs differ: the start frames are redrawn per epoch (record index seeds the generator)
    epoch_one, epoch_two = batches(iter(loader()), 10)[:5], batches(iter(loader()), 10)[5:]
    assert any(not np.array_equal(a["video"], b["video"]) for a, b in zip(epoch_one, epoch_two, strict=True))


@pytest.mark.parametrize("worker_count", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_global_iterator_resumes_with_workers(tmp_path, worker_count):
    """With workers too: make_loader lets them read absl flags, which pytest never parses."""
    source = labelled_clips(tmp_path, [(6, 16, 16)] * 24)
    spec = ClipSpec(num_frames=3, interval=2, min_side=8)
    mesh = mesh_of()

    def iterator():
        loader = pipeline.make_loader(source, spec, batch_size=8, seed=5, worker_count=worker_count)
        return pipeline.GlobalBatchIterator(loader, mesh, 8)

    run = iterator()
    batches(run, 2)
    state = run.get_state()
    expected = batches(run, 2)
    resumed = iterator()
    resumed.set_state(state)
    for want, got in zip(expected, batches(resumed, 2), strict=True):
        np.testing.assert_array_equal(np.asarray(want["video"]), np.asarray(got["video"]))
    assert resumed.counts == run.counts == {SKIPPED: 0, REJECTED: 0}


@pytest.mark.parametrize("shuffle", [False, True])
def test_per_host_sharding_splits_records_contiguously(tmp_path, shuffle):
    n, hosts = 22, 4
    source = labelled_clips(tmp_path, [(2, 16, 16)] * n)
    spec = ClipSpec(num_frames=1, interval=1, min_side=8)
    seen = []
    for host in range(hosts):
        loader = pipeline.make_loader(
            source, spec, 1, seed=0, shard_index=host, shard_count=hosts, shuffle=shuffle, num_epochs=1
        )
        seen.append([record_of(b["video"][0]) for b in loader])
    per_host = n // hosts  # 5; records 20 and 21 are dropped so every host has equal work
    for host, records in enumerate(seen):
        assert sorted(records) == list(range(host * per_host, (host + 1) * per_host))
    if shuffle:
        assert any(records != sorted(records) for records in seen)


def test_global_batch_on_eight_devices():
    mesh = mesh_of(data=2, fsdp=4)
    assert pipeline.batch_sizes(mesh, 2) == (16, 16)
    rng = np.random.default_rng(0)
    host = {
        "video": rng.integers(0, 256, (8, 3, 16, 16, 3), dtype=np.uint8),
        "latents": rng.normal(size=(8, 3, 2, 2, 4)).astype(np.float32),
    }
    out = pipeline.make_global_batch(mesh, host, 8)
    video = out["video"]
    assert video.shape == (8, 3, 16, 16, 3) and video.dtype == np.float32
    assert video.sharding.spec == PartitionSpec(("data", "fsdp"), None, None, None, None)
    rows = []
    for shard in video.addressable_shards:
        (row,) = range(8)[shard.index[0]]  # one row per device
        rows.append(row)
        expected = (host["video"][row : row + 1] / 255.0 - 0.5) / 0.5
        np.testing.assert_allclose(np.asarray(shard.data), expected, atol=1e-6)
    assert sorted(rows) == list(range(8))
    np.testing.assert_array_equal(np.asarray(out["latents"]), host["latents"])
    assert out["latents"].dtype == np.float32


def test_batch_is_replicated_over_the_tensor_axis():
    mesh = mesh_of(data=1, fsdp=4, tensor=2)
    assert pipeline.batch_sizes(mesh, 1) == (4, 4)
    host = {"latents": np.arange(4 * 2, dtype=np.float32).reshape(4, 2)}
    out = pipeline.make_global_batch(mesh, host, 4)
    rows = [range(4)[s.index[0]][0] for s in out["latents"].addressable_shards]
    assert sorted(rows) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_make_pipeline_from_the_tiny_config_on_synthetic_videos(tmp_path, tiny_config):
    from vgpt_jax.demo import synthetic_physics

    root = synthetic_physics.write_training_set(str(tmp_path), 3, 64, 64, seed=1)
    source = pipeline.open_source(os.path.join(root, "index.txt"))
    assert isinstance(source, VideoFileSource) and len(source) == 3
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()).reshape(4, 2, 1, 1), ("data", "fsdp", "tensor", "sequence")
    )
    tiny_config.data.per_device_batch_size = 1
    # tiny_cpu: 8 frames, latent 8 x 8 -> 64 x 64 px; the synthetic frames are 64 px, below the 128 px rule
    spec = ClipSpec.from_config(tiny_config.data, min_side=64)
    iterator = pipeline.make_pipeline(tiny_config, mesh, source, spec=spec)
    batch = next(iterator)["video"]
    assert batch.shape == (8, 8, 64, 64, 3)
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0 and float(batch.std()) > 0.05


def test_latent_records_are_sampled_along_the_frame_axis(tmp_path):
    with ClipRecordWriter(str(tmp_path), "latents") as writer:
        for i in range(4):
            frames = np.arange(30, dtype=np.float32)[:, None, None, None] + 100 * i
            writer.write(
                {
                    "mean": np.broadcast_to(frames, (30, 2, 3, 4)),
                    "logvar": np.zeros((30, 2, 3, 4), np.float32),
                }
            )
    source = ClipRecordSource(str(tmp_path))
    spec = ClipSpec(num_frames=5, interval=4, flexible=True, max_interval=12)  # size rules do not apply
    (batch,) = batches(iter(pipeline.make_loader(source, spec, 4, seed=0)), 1)
    assert batch["mean"].shape == batch["logvar"].shape == (4, 5, 2, 3, 4)
    for clip in batch["mean"][:, :, 0, 0, 0]:
        steps = np.diff(clip % 100)
        # flexible: one interval per clip, from U{4 .. min(floor(29 / 4), 12) = 7}
        assert np.all(steps == steps[0]) and 4 <= steps[0] <= 7


def test_class_conditioned_batches_carry_each_clip_s_label(tmp_path, tiny_config):
    """Class folders whose videos are one grey level per class: each row's ``condition`` is the
    class its pixels show; TrainInputs hands it on; a label past the table is refused up front."""
    from vgpt_jax.train import preflight
    from vgpt_jax.train.inputs import TrainInputs

    grey = {"drop": 30, "roll": 200}  # classes numbered by sorted folder name: drop 0, roll 1
    for name, level in grey.items():
        os.makedirs(tmp_path / name)
        for i in range(2):
            frames = [np.full((64, 64, 3), level, np.uint8)] * 40
            video_io.write_video(str(tmp_path / name / f"{i}.mp4"), frames, 8)
    tiny_config.condition.update(kind="class", num_classes=2)
    tiny_config.data.update(source_path=str(tmp_path), min_side=64, per_device_batch_size=1)
    spec = preflight.clip_spec(tiny_config, downsample=8)
    source = preflight.open_training_source(tiny_config, spec)
    iterator = pipeline.make_pipeline(tiny_config, mesh_of(), source, spec=spec)
    for _ in range(2):
        batch = next(iterator)
        shown = np.asarray(batch["video"]).mean(axis=(1, 2, 3, 4)) > 0  # the brighter class: 1
        assert batch["condition"].dtype == np.int32 and batch["condition"].shape == (8,)
        np.testing.assert_array_equal(np.asarray(batch["condition"]), shown.astype(np.int32))
        assert int(shown.sum()) == 4  # 8 rows: two shuffled epochs of the 4 videos, 2 of each class

    latents = {"latent_mean": np.zeros((2, 2, 1, 1, 1)), "latent_std": np.ones((2, 2, 1, 1, 1))}
    labels = np.asarray([1, 0], np.int32)
    prepared = TrainInputs(tiny_config)({**latents, "condition": labels}, step=0)
    assert sorted(prepared) == ["clean", "condition", "target"]
    np.testing.assert_array_equal(prepared["condition"], labels)
    assert sorted(TrainInputs(tiny_config)(latents, step=0)) == ["clean", "target"]

    tiny_config.condition.num_classes = 1
    with pytest.raises(ValueError, match=r"roll/\d.mp4 .* has label 1: .* in \[0, 1\)"):
        preflight.open_training_source(tiny_config, spec)


def test_text_conditioned_batches_carry_each_clip_s_text_ids(tmp_path, tiny_config):
    """A manifest whose videos are one grey level per text: each row's ``condition`` is the ids the
    ``tokenizers`` package gives for the text its pixels show, padded with -1; a row whose video
    does not decode is redrawn with the redrawn video's text; TrainInputs hands the ids on."""
    from vgpt_jax.train import preflight
    from vgpt_jax.train.inputs import TrainInputs

    texts = {30: "a ball drops", 120: "rolls", 210: "a ball rolls"}  # grey level -> text
    rows = []
    for i, (level, text) in enumerate(texts.items()):
        video_io.write_video(str(tmp_path / f"{i}.mp4"), [np.full((64, 64, 3), level, np.uint8)] * 40, 8)
        rows.append({"video": f"{i}.mp4", "text": text})
    (tmp_path / "broken.mp4").write_text("not a video")
    rows.append({"video": "broken.mp4", "text": "drops drops drops drops"})  # never in a batch
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    folder = write_text_tokenizer(tmp_path / "release")
    tiny_config.condition.update(kind="text", max_text_tokens=4, text_tokenizer=str(folder))
    tiny_config.data.update(source_path=str(manifest), min_side=64, per_device_batch_size=1)

    reference = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    expected = {}
    for level, text in texts.items():
        ids = reference.encode(text).ids
        expected[level] = ids + [-1] * (4 - len(ids))
    spec = preflight.clip_spec(tiny_config, downsample=8)
    iterator = pipeline.make_pipeline(
        tiny_config, mesh_of(), preflight.open_training_source(tiny_config, spec), spec=spec
    )
    for _ in range(2):
        batch = next(iterator)
        condition = np.asarray(batch["condition"])
        assert condition.dtype == np.int32 and condition.shape == (8, 4)
        # each row's grey level, from the decoded pixels in [-1, 1]
        levels = np.rint((np.asarray(batch["video"]).mean(axis=(1, 2, 3, 4)) + 1) * 127.5).astype(int)
        for level, ids in zip(levels, condition, strict=True):
            (shown,) = [known for known in texts if abs(known - level) <= 4]
            assert ids.tolist() == expected[shown]
    assert iterator.counts[SKIPPED] >= 1  # the broken video was drawn, and redrawn

    latents = {"latent_mean": np.zeros((2, 2, 1, 1, 1)), "latent_std": np.ones((2, 2, 1, 1, 1))}
    prepared = TrainInputs(tiny_config)({**latents, "condition": condition[:2]}, step=0)
    np.testing.assert_array_equal(prepared["condition"], condition[:2])
