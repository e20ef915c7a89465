"""Labelled sources: a JSONL manifest and the UCF-101 layout, from hand-written tiny files."""

import json
import os

import numpy as np
import pytest

from data_pipelines import labelled_source as ls
from data_pipelines import video_io
from data_pipelines.video_source import VideoRef


def tiny_video(path, frames=3):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    codec = "mpeg4" if str(path).endswith(".avi") else "libx264"  # UCF-101's AVIs hold MPEG-4 part 2
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(frames)]
    video_io.write_video(str(path), frames, 8, codec=codec)
    return str(path)


def test_manifest_rows_labels_text_and_skips(tmp_path):
    tiny_video(tmp_path / "videos" / "a.mp4")
    tiny_video(tmp_path / "videos" / "b.mp4")
    (tmp_path / "videos" / "empty.mp4").write_bytes(b"")
    rows = [
        '{"video": "videos/a.mp4", "label": 2, "class": "ball-roll"}',  # extra keys are ignored
        '{"video": "videos/b.mp4", "text": "a ball drops"}',
        "",
        '{"video": "videos/gone.mp4", "label": 0}',  # missing file
        '{"video": "videos/empty.mp4", "label": 0}',  # empty file: missing
        '{"video": "videos/a.mp4", "label": -1}',  # bad label
        '{"video": "videos/a.mp4", "label": true}',  # a bool is not a label
        '{"video": "videos/a.mp4"}',  # neither label nor text
        '{"label": 1}',  # no video
        "[1, 2]",  # not an object
        '{"video": "videos/a.mp4", "label": 1',  # not JSON
        '{"video": "videos/b.mp4", "label": 1}',  # listed twice
    ]
    manifest = tmp_path / "labels.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    listing = ls.read_manifest(str(manifest))
    assert [(v.video_id, v.label, v.text) for v in listing.videos] == [
        ("videos/a.mp4", 2, None),
        ("videos/b.mp4", None, "a ball drops"),
    ]
    assert listing.videos[0].path == os.path.join(str(tmp_path), "videos", "a.mp4")
    assert dict(listing.counts) == {ls.BAD_ROWS: 7, ls.MISSING: 2}
    assert listing.problems[0].startswith(f"{manifest}:4: no such file")
    assert "7 bad rows, 2 missing files skipped" in listing.describe_skips()

    source = ls.LabelledVideoSource.from_manifest(str(manifest))
    assert len(source) == 2 and isinstance(source[0], VideoRef)  # the clip sampler takes it
    assert source.counts == {ls.BAD_ROWS: 7, ls.MISSING: 2}


def test_manifest_paths_are_relative_to_the_manifest_not_the_cwd(tmp_path, monkeypatch):
    tiny_video(tmp_path / "data" / "v.mp4")
    (tmp_path / "data" / "m.jsonl").write_text(json.dumps({"video": "v.mp4", "label": 0}) + "\n")
    monkeypatch.chdir(tmp_path)
    (video,) = ls.read_manifest("data/m.jsonl").videos
    assert video.path == os.path.join(str(tmp_path), "data", "v.mp4")


def test_nothing_usable_or_nothing_readable_fails_at_start(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"video": "gone.mp4", "label": 0}\n')
    with pytest.raises(ValueError, match="no usable labelled video.*1 missing files"):
        ls.LabelledVideoSource.from_manifest(str(tmp_path / "m.jsonl"))
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "m.jsonl").write_text('{"video": "text.mp4", "label": 0}\n')
    with pytest.raises(ValueError, match="no readable video"):
        ls.LabelledVideoSource.from_manifest(str(tmp_path / "m.jsonl"))
    with pytest.raises(FileNotFoundError, match="manifest"):
        ls.read_manifest(str(tmp_path / "none.jsonl"))


def ucf_tree(root):
    """A 3-class UCF-101 in miniature, as distributed (CRLF line ends, 1-based class numbers)."""
    videos = root / "UCF-101"
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi",
                 "Archery/v_Archery_g02_c01.avi", "YoYo/v_YoYo_g01_c01.avi"):  # fmt: skip
        tiny_video(videos / name)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        b"Archery/v_Archery_g01_c01.avi 2\r\n"
        b"Archery/v_Archery_g09_c01.avi 2\r\n"  # not on disk
        b"YoYo/v_YoYo_g01_c01.avi 2\r\n"  # label disagrees with the folder
        b"Bowling/v_Bowling_g01_c01.avi 4\r\n"  # class not in the index
        b"Archery/v_Archery_g02_c01.avi two\r\n"  # malformed
    )
    (lists / "testlist01.txt").write_bytes(b"Archery/v_Archery_g02_c01.avi\r\nYoYo/v_YoYo_g01_c01.avi\r\n")
    return videos, lists


def test_ucf101_split_files_as_distributed(tmp_path):
    videos, lists = ucf_tree(tmp_path)
    names = ls.read_class_index(str(lists / "classInd.txt"))
    assert names == ["ApplyEyeMakeup", "Archery", "YoYo"]
    train = ls.read_ucf101_split(str(lists / "trainlist01.txt"), str(videos), names)
    assert [(v.video_id, v.label) for v in train.videos] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("Archery/v_Archery_g01_c01.avi", 1),
    ]
    assert dict(train.counts) == {ls.BAD_ROWS: 3, ls.MISSING: 1}
    test = ls.read_ucf101_split(str(lists / "testlist01.txt"), str(videos), names)
    assert [(v.video_id, v.label) for v in test.videos] == [
        ("Archery/v_Archery_g02_c01.avi", 1),
        ("YoYo/v_YoYo_g01_c01.avi", 2),
    ]
    assert not test.counts
    source = ls.LabelledVideoSource.from_ucf101(
        str(videos), str(lists / "testlist01.txt"), str(lists / "classInd.txt")
    )
    assert [source[i].label for i in range(len(source))] == [1, 2]


def test_open_labelled_through_a_split_file_and_the_class_check(tmp_path):
    """UCF-101 as training opens it: the split file's videos, classes from the classInd.txt beside it
    unless one is given; require_classes names a label past the table."""
    videos, lists = ucf_tree(tmp_path)
    source, names = ls.open_labelled(str(videos), split_file=str(lists / "testlist01.txt"))
    assert names == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert [(source[i].video_id, source[i].label) for i in range(len(source))] == [
        ("Archery/v_Archery_g02_c01.avi", 1),
        ("YoYo/v_YoYo_g01_c01.avi", 2),
    ]
    (tmp_path / "two.txt").write_text("1 YoYo\n2 Archery\n")
    source, names = ls.open_labelled(str(videos), str(tmp_path / "two.txt"), str(lists / "testlist01.txt"))
    assert names == ["YoYo", "Archery"] and [source[i].label for i in range(len(source))] == [1, 0]
    source.require_classes(2)
    with pytest.raises(ValueError, match=r"Archery/v_Archery_g02_c01.avi .* label 1: .*\[0, 1\)"):
        source.require_classes(1)


def test_class_folders_with_and_without_an_index(tmp_path):
    videos, lists = ucf_tree(tmp_path)
    tiny_video(videos / "loose.mp4")  # not in a class folder
    listing, names = ls.list_class_folders(str(videos))
    assert names == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert [v.label for v in listing.videos] == [0, 1, 1, 2]
    assert dict(listing.counts) == {ls.BAD_ROWS: 1}
    listing, names = ls.list_class_folders(str(videos), ["YoYo", "Archery"])
    assert [(v.video_id.split("/")[0], v.label) for v in listing.videos] == [
        ("Archery", 1),
        ("Archery", 1),
        ("YoYo", 0),
    ]
    assert dict(listing.counts) == {ls.BAD_ROWS: 2}


@pytest.mark.parametrize(
    "text, match",
    [("1 A\n3 B\n", "numbered 1..2"), ("1 A\n1 B\n", "new number"), ("A 1\n", "NUMBER CLASS")],
)
def test_a_broken_class_index_is_an_error(tmp_path, text, match):
    (tmp_path / "classInd.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        ls.read_class_index(str(tmp_path / "classInd.txt"))
