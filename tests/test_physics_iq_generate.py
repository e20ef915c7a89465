"""`vgpt physics-iq generate` and `run` on a one-scenario synthetic benchmark (3 test cases, 48x32 px)."""

import csv
import json
import shutil

import av
import numpy as np
import pytest
from inference_fixture import shared_checkpoints

from data_pipelines import video_io
from vgpt_jax import cli
from vgpt_jax.demo.synthetic_physics import write_benchmark

FPS = 8
# 4 conditioning frames, then 40 frames in 2 rounds of 20 (one compiled program)
FAST = ["--cond-frames", "4", "--steps", "2", "--clip-frames", "20", "--window-frames", "24"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(benchmark folder, exported checkpoint, folder generated from it, generate's stdout)."""
    root = tmp_path_factory.mktemp("physics_iq_generate")
    bench = write_benchmark(str(root), num_scenarios=1, height=32, width=48)
    checkpoint = str(shared_checkpoints()[1])
    generated = root / "generated"
    args = ["generate", "--checkpoint", checkpoint, "--data-dir", bench, "--fps", str(FPS)]
    assert cli.main(["physics-iq", *args, "--output-dir", str(generated), *FAST]) == 0
    return root / "physics-IQ-benchmark", checkpoint, generated


def _expected_names(bench):
    """The benchmark's own names for the take-1 videos (descriptions.csv `generated_video_name`)."""
    with open(bench / "descriptions" / "descriptions.csv") as f:
        return sorted(
            row["generated_video_name"] for row in csv.DictReader(f) if "_take-1_" in row["scenario"]
        )


def _frames_fps_size_duration(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, float(stream.average_rate), (stream.width, stream.height), container.duration / 1e6


def test_generate_writes_every_test_case_for_exactly_5_seconds(setup):
    bench, _, generated = setup
    assert sorted(p.name for p in generated.iterdir()) == _expected_names(bench)  # nothing else left
    for path in generated.iterdir():
        frames, fps, size, duration = _frames_fps_size_duration(path)
        assert (frames, fps, size) == (40, 8.0, (48, 32)), path.name  # the conditioning video's size
        assert frames / fps == 5.0
        assert abs(duration - 5.0) <= 1e-3  # the container duration the benchmark's check reads


def test_generate_skips_finished_videos(setup, tmp_path, capsys):
    bench, checkpoint, generated = setup
    output = tmp_path / "generated"
    shutil.copytree(generated, output)
    first, *others = sorted(output.iterdir())
    first.unlink()
    before = {p: p.stat().st_mtime_ns for p in others}
    args = ["generate", "--checkpoint", checkpoint, "--data-dir", str(bench), "--fps", str(FPS)]
    assert cli.main(["physics-iq", *args, "--output-dir", str(output), *FAST]) == 0
    assert "generated 1 videos (2 were already there)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in others} == before
    assert _frames_fps_size_duration(first)[0] == 40


def test_run_generates_then_scores(setup, tmp_path):
    """`run` into a folder that already holds every video: nothing is generated, scores.json is written."""
    bench, checkpoint, generated = setup
    args = ["run", "--checkpoint", checkpoint, "--data-dir", str(bench), "--fps", str(FPS), "--workers", "1"]
    assert (
        cli.main(
            ["physics-iq", *args, "--output-dir", str(tmp_path), "--generated-dir", str(generated), *FAST]
        )
        == 0
    )
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["num_videos"] == 3 and scores["fps"] == FPS
    assert 0.0 <= scores["physics_iq"] <= 100.0


def test_generate_and_run_read_the_descriptions_beside_the_data_folder(setup, tmp_path, capsys):
    """The benchmark repository's layout: repo/descriptions/descriptions.csv beside the downloaded
    repo/physics-IQ-benchmark. Every video exists already, so generate only checks the inputs."""
    bench, checkpoint, generated = setup
    repo = tmp_path / "repo"
    shutil.copytree(bench, repo / "physics-IQ-benchmark", ignore=shutil.ignore_patterns("descriptions"))
    shutil.copytree(bench / "descriptions", repo / "descriptions")
    data = str(repo / "physics-IQ-benchmark")
    args = ["--checkpoint", checkpoint, "--data-dir", data, "--fps", str(FPS), *FAST]
    assert cli.main(["physics-iq", "generate", *args, "--output-dir", str(generated)]) == 0
    assert "generated 0 videos (3 were already there)" in capsys.readouterr().out
    run = [
        "run",
        *args,
        "--output-dir",
        str(tmp_path / "o"),
        "--generated-dir",
        str(generated),
        "--workers",
        "1",
    ]
    assert cli.main(["physics-iq", *run]) == 0
    assert json.loads((tmp_path / "o" / "scores.json").read_text())["num_videos"] == 3


def _write(path, frames=10, fps=FPS):
    video_io.write_video(str(path), [np.zeros((32, 48, 3), np.uint8)] * frames, fps)


def _case(setup, tmp_path, case):
    """Builds one bad input; returns (generate's arguments, text the error must contain)."""
    bench, _, _ = setup
    data, output = tmp_path / "bench", tmp_path / "out"
    shutil.copytree(bench, data)
    output.mkdir()
    conditioning = sorted((data / "split-videos" / "conditioning" / f"{FPS}FPS").glob("0001_*"))[0]
    name = _expected_names(bench)[0]
    fps, extra = str(FPS), []
    if case == "missing folder":
        shutil.rmtree(data)
        expect = f"{data} does not exist"
    elif case == "missing fps folder":
        fps, expect = "12", "12FPS does not exist"
    elif case == "non-integer fps":
        fps, expect = "7.5", "'7.5' is not an integer"
    elif case == "mismatched fps":
        _write(conditioning, frames=24, fps=16)
        expect = f"{conditioning} plays at 16 fps, not the --fps 8"
    elif case == "unreadable video":
        conditioning.write_bytes(b"not a video")
        expect = f"cannot decode the video {conditioning}"
    elif case == "too few conditioning frames":
        extra, expect = ["--cond-frames", "25"], "--cond-frames 25 is not allowed"
    elif case == "shorter than 5 s":
        _write(output / name)
        expect = f"{output / name} has 10 frames at 8 fps, not this run's 40 frames (5.000 s)"
    elif case == "duplicate ID":
        _write(output / "0001_a.mp4")
        _write(output / "0001_b.mp4")
        expect = "both have ID 0001"
    elif case == "unknown ID":
        _write(output / "0999_x.mp4")
        expect = "unknown test-case ID 0999"
    elif case == "no descriptions":
        shutil.rmtree(data / "descriptions")
        expect = f"no descriptions.csv in {data / 'descriptions' / 'descriptions.csv'} nor {tmp_path}"
    elif case == "missing --descriptions file":
        extra, expect = (
            ["--descriptions", str(tmp_path / "none.csv")],
            f"{tmp_path / 'none.csv'} does not exist",
        )
    else:  # a known ID under another name would be a second video for that case
        _write(output / "0001_other.mp4")
        expect = f"{output / '0001_other.mp4'} is a video for test case 0001, which this run writes as {name}"
    args = ["--data-dir", str(data), "--fps", fps, "--output-dir", str(output), *extra]
    return args, expect


@pytest.mark.parametrize(
    "case",
    [
        "missing folder",
        "missing fps folder",
        "non-integer fps",
        "mismatched fps",
        "unreadable video",
        "too few conditioning frames",
        "shorter than 5 s",
        "duplicate ID",
        "unknown ID",
        "known ID under another name",
        "no descriptions",
        "missing --descriptions file",
    ],
)
def test_generate_names_the_bad_input(setup, tmp_path, capsys, case):
    """Each bad input stops the run before the checkpoint is read (it does not exist here)."""
    args, expect = _case(setup, tmp_path, case)
    try:
        status = cli.main(["physics-iq", "generate", "--checkpoint", str(tmp_path / "no-checkpoint"), *args])
    except SystemExit as exit_:  # argparse rejects a malformed flag
        status = exit_.code
    assert status in (1, 2)
    assert expect in capsys.readouterr().err
