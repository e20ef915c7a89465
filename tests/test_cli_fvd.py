"""`vgpt fvd`: errors before any computation, and a run on camera footage with cached statistics."""

import argparse
import json
import shutil

import numpy as np
import pytest
from real_footage import camera_clips

from data_pipelines import video_io
from vgpt_jax.cli import fvd as cli_fvd


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_fvd.add_arguments(parser)
    return cli_fvd.main(parser.parse_args([str(a) for a in argv]))


def write_videos(folder, videos: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames in videos.items():
        video_io.write_video(str(folder / name), frames, fps=25)


def test_errors_name_the_fix(tmp_path):
    out = tmp_path / "out"
    long = ("--real", tmp_path / "long", "--generated", tmp_path / "long", "--output-dir", out)
    (tmp_path / "empty").mkdir()
    write_videos(tmp_path / "short", {"a.mp4": np.zeros((5, 32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match="give --real DIR, or --real-stats FILE"):
        run("--generated", tmp_path / "short", "--output-dir", out)
    with pytest.raises(ValueError, match="holds no videos"):
        run("--real", tmp_path / "short", "--generated", tmp_path / "empty", "--output-dir", out)
    with pytest.raises(ValueError, match=r"1 of 2 videos cannot give 9 frames at .*a.mp4 \(5 frames\)"):
        write_videos(tmp_path / "long", {"b.mp4": np.zeros((12, 32, 32, 3), np.uint8)})
        run(
            "--real", tmp_path / "long", "--generated", tmp_path / "short", "--output-dir", out, "--frames", 9
        )
    with pytest.raises(ValueError, match="at least 9 frames"):
        run(*long, "--frames", 4)
    with pytest.raises(ValueError, match="add --subset N"):
        run(
            "--real",
            tmp_path / "long",
            "--generated",
            tmp_path / "long",
            "--output-dir",
            out,
            "--class-balanced",
        )
    assert not out.exists()


@pytest.mark.slow
def test_camera_footage_against_itself_scores_zero_also_from_cached_statistics(tmp_path):
    clips = camera_clips(frames=10)
    write_videos(tmp_path / "real", {"b_bikes.mp4": clips[0], "a_carphone.mp4": clips[1]})
    shutil.copytree(tmp_path / "real", tmp_path / "generated")
    stats = tmp_path / "real_stats.npz"
    common = ("--generated", tmp_path / "generated", "--frames", 10, "--real-stats", stats)
    assert run("--real", tmp_path / "real", "--output-dir", tmp_path / "first", *common) == 0
    report = json.loads((tmp_path / "first" / "fvd.json").read_text())
    assert abs(report["fvd"]) < 1e-6
    assert report["num_real"] == report["num_generated"] == 2
    assert report["protocol"]["frames"] == 10 and report["protocol"]["resize"] == "squash"
    assert "singular" in report["warnings"][0]
    with np.load(tmp_path / "first" / "features.npz") as saved:
        assert (
            list(saved["real_files"]) == list(saved["generated_files"]) == ["a_carphone.mp4", "b_bikes.mp4"]
        )
        assert saved["real"].shape == saved["generated"].shape == (2, 400)
        np.testing.assert_array_equal(saved["real"], saved["generated"])

    assert run("--output-dir", tmp_path / "second", *common) == 0  # real statistics from the file
    cached = json.loads((tmp_path / "second" / "fvd.json").read_text())
    assert abs(cached["fvd"]) < 1e-6 and cached["num_real"] == 2 and cached["real"] == str(stats)
    with pytest.raises(ValueError, match="frames differ"):
        run("--output-dir", tmp_path / "third", *common[:2], "--frames", 9, "--real-stats", stats)
