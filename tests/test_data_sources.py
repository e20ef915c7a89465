"""Video files (PyAV), folder / .txt sources, ArrayRecord clip records and the TFDS source."""

import json
import os
import pathlib
import sys

import ml_dtypes
import numpy as np
import pytest

from data_pipelines import array_record_source as ars
from data_pipelines import video_io
from data_pipelines.video_source import VideoFileSource, VideoRef, read_index


def ramp_video(path, num_frames, width=64, height=48, fps=30):
    """Frame i is grey 4 * (i % 64) on the left half and 4 * (i // 64) on the right, so a decoded
    frame tells its own index."""
    frames = []
    for i in range(num_frames):
        frame = np.full((height, width, 3), 4 * (i % 64), np.uint8)
        frame[:, width // 2 :] = 4 * (i // 64)
        frames.append(frame)
    video_io.write_video(str(path), frames, fps)
    return str(path)


def frame_numbers(frames):
    half = frames.shape[2] // 2
    return [round(f[:, 4 : half - 4].mean() / 4) + 64 * round(f[:, half + 4 : -4].mean() / 4) for f in frames]


def test_probe_and_read_only_the_asked_frames(tmp_path):
    path = ramp_video(tmp_path / "a.mp4", 50)
    info = video_io.probe(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 50, 30.0)
    frames = video_io.read_frames(path, [7, 3, 45, 3, 0])
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    assert frame_numbers(frames) == [7, 3, 45, 3, 0]


def test_read_frames_reseeks_across_long_gaps(tmp_path):
    path = ramp_video(tmp_path / "long.mp4", video_io.RESEEK_GAP + 60)
    wanted = [1, video_io.RESEEK_GAP + 50, 2]
    assert frame_numbers(video_io.read_frames(path, wanted)) == wanted


def test_bad_files_raise_bad_video_error(tmp_path):
    good = ramp_video(tmp_path / "good.mp4", 40)
    data = pathlib.Path(good).read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end is lost
    cases = {
        "empty.mp4": "zero-length",
        "text.mp4": "cannot open",
        "cut.mp4": "cannot open",
        "missing.mp4": "no such file",
    }
    for name, reason in cases.items():
        with pytest.raises(video_io.BadVideoError, match=reason):
            video_io.read_frames(str(tmp_path / name), [0])
    with pytest.raises(video_io.BadVideoError, match="truncated"):
        video_io.read_frames(good, [39, 40])  # past the last frame


def test_truncated_stream_with_a_leading_index_is_detected(tmp_path):
    path = str(tmp_path / "fast.mp4")
    frames = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(60)]
    import av  # a 'faststart' file keeps its index in front, so only decoding finds the cut

    with av.open(path, "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    data = pathlib.Path(path).read_bytes()
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(video_io.BadVideoError):
        video_io.read_frames(str(cut), [55])


def test_folder_source_lists_videos_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    ramp_video(tmp_path / "b.mp4", 10)
    ramp_video(tmp_path / "sub" / "a.mp4", 10)
    (tmp_path / "notes.txt").write_text("x")
    source = VideoFileSource(str(tmp_path))
    assert len(source) == 2
    assert [os.path.relpath(source[i].path, tmp_path) for i in range(2)] == [
        "b.mp4",
        os.path.join("sub", "a.mp4"),
    ]
    assert source[0].num_frames is None


def test_txt_index(tmp_path):
    ramp_video(tmp_path / "a.mp4", 12)
    index = tmp_path / "list.txt"
    index.write_text(f"# comment\na.mp4\t12\n\n{tmp_path / 'b c.mp4'}\t300\n")
    assert read_index(str(index)) == [
        VideoRef(str(tmp_path / "a.mp4"), 12),
        VideoRef(str(tmp_path / "b c.mp4"), 300),
    ]
    assert len(VideoFileSource(str(index))) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("a.mp4\t12\na.mp4 twelve\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'path<TAB>frame_count'"):
        read_index(str(bad))


def test_dataset_without_readable_video_fails_at_start(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    (tmp_path / "y.mp4").write_text("garbage")
    with pytest.raises(ValueError) as info:
        VideoFileSource(str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "2 video files" in message
    assert "x.mp4: zero-length file" in message and "y.mp4: cannot open" in message


def test_folder_without_videos_says_what_it_found(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"1")
    (tmp_path / "b.jpg").write_bytes(b"1")
    with pytest.raises(ValueError, match=r"no video files in .*it holds 2 files \(2 x \.jpg\)"):
        VideoFileSource(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFileSource(str(tmp_path / "nope"))


def test_record_round_trip_and_layout():
    arrays = {
        "video": np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3),
        "latents": np.linspace(-1, 1, 2 * 7, dtype=np.float32).reshape(2, 7),
        "half": np.array([[1.5], [-2.0]], dtype=ml_dtypes.bfloat16),
    }
    record = ars.encode_record(arrays, {"fps": 8})
    assert record[:8] == b"VGPTREC1"
    header_len = int.from_bytes(record[8:12], "little")
    header = json.loads(record[12 : 12 + header_len])
    start = -(-(12 + header_len) // 16) * 16
    assert [a["name"] for a in header["arrays"]] == ["video", "latents", "half"]
    assert all(a["offset"] % 16 == 0 for a in header["arrays"])
    # the first array's bytes sit at the first 16-aligned offset after the header
    assert record[start : start + 90] == arrays["video"].tobytes()
    clip = ars.decode_record(record)
    assert clip.meta == {"fps": 8} and clip.num_frames == 2
    for name, array in arrays.items():
        assert clip.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(clip.arrays[name], array)


def test_writer_and_source(tmp_path):
    directory = str(tmp_path / "clips")
    with ars.ClipRecordWriter(directory, "latents", records_per_shard=2, meta={"scale": 0.13025}) as writer:
        for i in range(5):
            writer.write({"latents": np.full((3 + i, 2, 2, 4), i, np.float32)}, {"i": i})
    index = json.loads(pathlib.Path(directory, "index.json").read_text())
    assert index["num_records"] == 5 and index["kind"] == "latents"
    assert [s["num_records"] for s in index["shards"]] == [2, 2, 1]
    assert index["fields"] == {"latents": "float32"} and index["meta"] == {"scale": 0.13025}
    source = ars.ClipRecordSource(directory)
    assert len(source) == 5
    for i in range(5):
        assert source[i].meta == {"i": i} and source[i].arrays["latents"].shape == (3 + i, 2, 2, 4)
        assert float(source[i].arrays["latents"][0, 0, 0, 0]) == i


def test_writer_rejects_inconsistent_records(tmp_path):
    with ars.ClipRecordWriter(str(tmp_path)) as writer:
        writer.write({"video": np.zeros((2, 4, 4, 3), np.uint8)})
        with pytest.raises(ValueError, match="differ"):
            writer.write({"video": np.zeros((2, 4, 4, 3), np.float32)})
        with pytest.raises(ValueError, match="leading frame axis"):
            writer.write({"video": np.zeros((2, 4, 4, 3), np.uint8), "b": np.zeros((3,), np.uint8)})


def test_record_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index.json"):
        ars.ClipRecordSource(str(tmp_path))
    (tmp_path / "index.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="is not 'vgpt_jax.clips'"):
        ars.ClipRecordSource(str(tmp_path))


def test_tfds_source_reads_without_tensorflow(tmp_path):
    from data_pipelines import tfds_source

    clips = [{"video": np.full((4 + i, 8, 16, 3), 10 * i, np.uint8), "fps": 8.0} for i in range(3)]
    builder_dir = tfds_source.prepare_clips(str(tmp_path), "tiny", {"train": clips})
    source = tfds_source.TfdsClipSource(builder_dir, "train")
    assert len(source) == 3
    seen = sorted((source[i].num_frames, int(source[i].arrays["video"][0, 0, 0, 0])) for i in range(3))
    assert seen == [(4, 0), (5, 10), (6, 20)]
    assert source[0].meta == {"fps": 8.0} and source[0].arrays["video"].dtype == np.uint8
    assert "tensorflow" not in sys.modules
    with pytest.raises(ValueError, match="no split 'test'"):
        tfds_source.TfdsClipSource(builder_dir, "test")
    with pytest.raises(FileNotFoundError, match="no prepared TFDS dataset"):
        tfds_source.TfdsClipSource(str(tmp_path / "nothing"))
