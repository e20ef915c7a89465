"""The synthetic physics world as files: a training set and a benchmark split in the Physics-IQ layout.

``python -m vgpt_jax.demo.synthetic_physics --out DIR --num-train N --num-scenarios M --size 64``
writes::

    DIR/train/videos/train-00000-ball-drop.mp4 ...   N videos (--train-seconds at --train-fps)
    DIR/train/index.txt                              'videos/NAME.mp4<TAB>frame_count' lines
    DIR/train/labels.jsonl                           {"video": "videos/NAME.mp4", "label": K, "class": KIND}
    DIR/train/labels_{train,test}.jsonl              the same rows split 3:1 (every 4th video is test)
    DIR/train/clips/                                 the same videos as ArrayRecord (--train-format)
    DIR/physics-IQ-benchmark/                        M scenarios x 3 views x 2 takes (PHYSICS_IQ_SPEC §1-2)
      descriptions/descriptions.csv
      split-videos/conditioning/{F}FPS/{ID}_conditioning-videos_{F}FPS_{view}_{take}_{scen}.mp4   3 s
      split-videos/testing/{F}FPS/{ID}_testing-videos_{F}FPS_{view}_{take}_{scen}.mp4             5 s
      switch-frames/{ID}_switch-frames_anyFPS_{view}_{scen without .mp4}.jpg                       take 1

for F in 8, 16, 24, 30. IDs are 4-digit: take 1 gets 1 … 3M (scenario-major, views left, centre,
right), take 2 the same + 3M. A scenario's name is ``synthetic-{kind}-{index}`` (no '_', which the
benchmark splits on). Each take is simulated once and sampled at every frame rate, so the fps
variants show the same motion; the switch frame is the frame at t = 3 s, which every frame rate
samples (it is the first testing frame). Real motion masks and the 8 s full videos are not
written: the evaluation regenerates masks when ``video-masks/real`` is missing.

Every scene, take and training video comes from its own seed derived from ``--seed``, so the output
is the same for any ``--workers``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from data_pipelines import video_io
from data_pipelines.array_record_source import ClipRecordWriter
from vgpt_jax.demo import physics_scenes
from vgpt_jax.demo.physics_render import draw_balls, render_background
from vgpt_jax.demo.physics_sim import Trajectory, simulate, step_index
from vgpt_jax.evaluation.physics_iq.layout import CONDITIONING_SECONDS
from vgpt_jax.evaluation.physics_iq.masks import motion_masks

BENCHMARK_DIR = "physics-IQ-benchmark"
DESCRIPTIONS = os.path.join("descriptions", "descriptions.csv")
BENCHMARK_FPS = (8, 16, 24, 30)
TESTING_SECONDS = 5
TAKES = ("take-1", "take-2")
CATEGORY = "Solid Mechanics"
_TRAIN, _BENCHMARK, _SECOND_TAKE = 0, 1, 2  # seed-sequence streams
MAX_SCENE_DRAWS = 100
LABELS_FILE = "labels.jsonl"  # the training videos' scene kinds, for a probe or class conditions
LABEL_SPLITS = {"train": "labels_train.jsonl", "test": "labels_test.jsonl"}
TEST_EVERY = 4  # every 4th training video is in the test split of the labels


def scenario_name(index: int, kind: str) -> str:
    return f"synthetic-{kind}-{index:04d}"


def video_id(scenario: int, view: int, take: int, num_scenarios: int) -> str:
    """The 4-digit ID of (scenario, view, take), all 0-based: 3 * scenario + view + 1 (+ 3M for take 2)."""
    return f"{3 * scenario + view + 1 + take * 3 * num_scenarios:04d}"


def split_video_name(vid: str, part: str, fps: int, view: str, take: str, scenario_file: str) -> str:
    """``part`` is 'testing' or 'conditioning'; ``scenario_file`` is the scenario name with '.mp4'."""
    return f"{vid}_{part}-videos_{fps}FPS_{view}_{take}_{scenario_file}"


def render_view(
    scene: physics_scenes.Scene, trajectory: Trajectory, view: str, height: int, width: int, steps
) -> dict[int, np.ndarray]:
    """Frames (H, W, 3) uint8 of a simulated take seen from ``view``, keyed by simulation step."""
    cam = physics_scenes.camera(scene, view, height, width)
    background = render_background(scene.background, cam)
    radii = np.array([b.radius for b in scene.balls])
    colors = np.array([b.color for b in scene.balls])
    return {
        s: draw_balls(
            background, cam, trajectory.position[s], radii, trajectory.angle[s], colors, trajectory.present[s]
        )
        for s in sorted(set(steps))
    }


def fps_steps(fps: int, seconds: float) -> list[int]:
    """Simulation steps of the frames of a ``seconds`` long video at ``fps``, starting at t = 0."""
    return [step_index(k / fps) for k in range(round(seconds * fps))]


def _seed(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def testing_part_moves(scene: physics_scenes.Scene, height: int, width: int) -> bool:
    """Whether every view of ``scene`` shows motion after the switch frame that Physics-IQ's masks see.

    The benchmark's own motion masks (on the rendered testing part at the lowest benchmark frame
    rate, before video compression) must mark at least one pixel in some frame.
    """
    fps = min(BENCHMARK_FPS)
    duration = CONDITIONING_SECONDS + TESTING_SECONDS
    trajectory = simulate(scene.world, list(scene.balls), duration)
    steps = fps_steps(fps, duration)[CONDITIONING_SECONDS * fps :]
    for view in physics_scenes.VIEWS:
        frames = render_view(scene, trajectory, view, height, width, steps)
        masks = motion_masks(frames[s][..., ::-1] for s in steps)  # the masks read BGR
        if not any(np.any(mask) for mask in masks):
            return False
    return True


def benchmark_takes(
    seed: int, scenario: int, height: int, width: int
) -> tuple[physics_scenes.Scene, physics_scenes.Scene]:
    """(take 1, take 2) of a benchmark scenario; kinds cycle so that small sets hold every kind.

    A take 1 whose testing part is still in some view (e.g. the rolling ball left the room before
    the switch frame) is drawn again: such a test case asks nothing about physics, and only
    rewards predicting stillness (Physics-IQ's scenarios all move after the switch).
    """
    kind = physics_scenes.KINDS[scenario % len(physics_scenes.KINDS)]
    rng = _seed(seed, _BENCHMARK, scenario)
    for _ in range(MAX_SCENE_DRAWS):
        first = physics_scenes.sample_scene(rng, width / height, kind)
        if testing_part_moves(first, height, width):
            return first, physics_scenes.second_take(first, _seed(seed, _SECOND_TAKE, scenario))
    raise RuntimeError(
        f"no {kind} scene of {MAX_SCENE_DRAWS} draws moves after the switch frame in every view at "
        f"{width}x{height}: the frames are too small to see the balls move"
    )


def _write_scenario(
    root: str, seed: int, scenario: int, num_scenarios: int, height: int, width: int
) -> list[dict]:
    """Writes every video and switch frame of one scenario; returns its descriptions.csv rows."""
    takes = benchmark_takes(seed, scenario, height, width)
    name = scenario_name(scenario + 1, takes[0].kind)
    duration = CONDITIONING_SECONDS + TESTING_SECONDS
    wanted = sorted({s for fps in BENCHMARK_FPS for s in fps_steps(fps, duration)})
    rows = []
    for take_index, (take, scene) in enumerate(zip(TAKES, takes, strict=True)):
        trajectory = simulate(scene.world, list(scene.balls), duration)
        for view_index, view in enumerate(physics_scenes.VIEWS):
            vid = video_id(scenario, view_index, take_index, num_scenarios)
            frames = render_view(scene, trajectory, view, height, width, wanted)
            for fps in BENCHMARK_FPS:
                steps = fps_steps(fps, duration)
                split = CONDITIONING_SECONDS * fps
                for part, part_steps in (("conditioning", steps[:split]), ("testing", steps[split:])):
                    folder = os.path.join(root, "split-videos", part, f"{fps}FPS")
                    path = os.path.join(folder, split_video_name(vid, part, fps, view, take, name + ".mp4"))
                    video_io.write_video(path, (frames[s] for s in part_steps), fps)
            if take_index == 0:
                jpg = f"{vid}_switch-frames_anyFPS_{view}_{name}.jpg"
                switch = frames[step_index(CONDITIONING_SECONDS)]
                Image.fromarray(switch).save(os.path.join(root, "switch-frames", jpg), quality=95)
            rows.append(
                {
                    "scenario": f"{vid}_{view}_{take}_{name}.mp4",
                    "description": physics_scenes.describe(takes[0]),
                    "category": CATEGORY,
                    "generated_video_name": f"{vid}_{view}_{name}.mp4",
                }
            )
    return rows


def write_benchmark(
    out_dir: str, num_scenarios: int, height: int, width: int, seed: int = 0, workers: int = 1
) -> str:
    """Writes the benchmark split under ``out_dir/physics-IQ-benchmark``; returns that folder."""
    root = os.path.join(out_dir, BENCHMARK_DIR)
    for part in ("conditioning", "testing"):
        for fps in BENCHMARK_FPS:
            os.makedirs(os.path.join(root, "split-videos", part, f"{fps}FPS"), exist_ok=True)
    os.makedirs(os.path.join(root, "switch-frames"), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.join(root, DESCRIPTIONS)), exist_ok=True)
    jobs = [(root, seed, s, num_scenarios, height, width) for s in range(num_scenarios)]
    per_scenario = _map(_write_scenario, jobs, workers)
    rows = [
        row
        for take in (0, 1)
        for scenario_rows in per_scenario
        for row in scenario_rows[3 * take : 3 * take + 3]
    ]
    with open(os.path.join(root, DESCRIPTIONS), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scenario", "description", "category", "generated_video_name"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def training_video(
    seed: int,
    index: int,
    height: int,
    width: int,
    fps: int,
    seconds: float,
    kinds: tuple[str, ...] = physics_scenes.KINDS,
):
    """(name, scene kind, frames (T, H, W, 3) uint8) of training video ``index``: a fresh scene of
    one of ``kinds`` (a world of :data:`physics_scenes.CLASS_WORLDS`) from a random view."""
    rng = _seed(seed, _TRAIN, index)
    # the kind is the scene's first draw, as sample_scene would make it
    scene = physics_scenes.sample_scene(rng, width / height, kinds[rng.integers(len(kinds))])
    view = physics_scenes.VIEWS[rng.integers(len(physics_scenes.VIEWS))]
    steps = fps_steps(fps, seconds)
    trajectory = simulate(scene.world, list(scene.balls), seconds)
    frames = render_view(scene, trajectory, view, height, width, steps)
    return f"train-{index:05d}-{scene.kind}", scene.kind, np.stack([frames[s] for s in steps])


def _write_training_video(videos_dir: str, seed: int, index: int, height: int, width: int, fps: int,
                          seconds: float, keep_frames: bool, kinds: tuple[str, ...]):  # fmt: skip
    name, kind, frames = training_video(seed, index, height, width, fps, seconds, kinds)
    if videos_dir:
        video_io.write_video(os.path.join(videos_dir, name + ".mp4"), frames, fps)
    return name, kind, len(frames), frames if keep_frames else None


def write_labels(
    root: str, names_and_kinds: list[tuple[str, str]], kinds: tuple[str, ...] = physics_scenes.KINDS
) -> None:
    """``root/labels.jsonl`` (every video's scene kind as a class: its index in ``kinds``) and its
    3:1 split ``labels_train.jsonl`` / ``labels_test.jsonl``."""
    rows = [
        json.dumps({"video": f"videos/{name}.mp4", "label": kinds.index(kind), "class": kind})
        for name, kind in names_and_kinds
    ]
    parts = {LABELS_FILE: rows}
    for split, name in LABEL_SPLITS.items():
        parts[name] = [
            row for i, row in enumerate(rows) if (i % TEST_EVERY == TEST_EVERY - 1) == (split == "test")
        ]
    for name, part in parts.items():
        with open(os.path.join(root, name), "w") as f:
            f.writelines(row + "\n" for row in part)


def write_training_set(
    out_dir: str,
    num_videos: int,
    height: int,
    width: int,
    seed: int = 0,
    fps: int = 8,
    seconds: float = 8.0,
    formats: tuple[str, ...] = ("mp4",),
    workers: int = 1,
    kinds: tuple[str, ...] = physics_scenes.KINDS,
) -> str:
    """Writes ``out_dir/train``: MP4 videos, index.txt and the labels ('mp4'), and/or ArrayRecord
    clips ('array_record'), of scenes of ``kinds``."""
    root = os.path.join(out_dir, "train")
    videos_dir = os.path.join(root, "videos") if "mp4" in formats else ""
    if videos_dir:
        os.makedirs(videos_dir, exist_ok=True)
    keep = "array_record" in formats
    jobs = [(videos_dir, seed, k, height, width, fps, seconds, keep, kinds) for k in range(num_videos)]
    results = _map(_write_training_video, jobs, workers)
    if videos_dir:
        with open(os.path.join(root, "index.txt"), "w") as f:
            f.writelines(f"videos/{name}.mp4\t{count}\n" for name, _, count, _ in results)
        write_labels(root, [(name, kind) for name, kind, _, _ in results], kinds)
    if keep:
        with ClipRecordWriter(os.path.join(root, "clips"), "pixels", meta={"fps": fps}) as writer:
            for name, _, _, frames in results:
                writer.write({"video": frames}, {"name": name, "fps": fps})
    return root


def _map(fn, jobs: list[tuple], workers: int) -> list:
    """``[fn(*job) for job in jobs]``, in ``workers`` fresh processes when > 1 (spawned, so a caller
    that already started JAX threads is safe)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        return list(pool.map(fn, *zip(*jobs, strict=True)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=64, help="training videos")
    parser.add_argument(
        "--num-scenarios", type=int, default=4, help="benchmark scenarios (x3 views x2 takes)"
    )
    parser.add_argument("--size", type=int, default=64, help="frame height in pixels (even)")
    parser.add_argument(
        "--width", type=int, default=None, help="frame width in pixels (even; default: --size)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-fps", type=int, default=8)
    parser.add_argument("--train-seconds", type=float, default=8.0)
    parser.add_argument("--train-format", choices=["mp4", "array_record", "both"], default="both")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="processes")
    args = parser.parse_args(argv)
    height, width = args.size, args.width or args.size
    if height % 2 or width % 2 or min(height, width) < 16:
        parser.error(f"--size/--width must be even and >= 16 (H.264 4:2:0), got {height}x{width}")
    start = time.perf_counter()
    formats = ("mp4", "array_record") if args.train_format == "both" else (args.train_format,)
    train = write_training_set(args.out, args.num_train, height, width, args.seed, args.train_fps,
                               args.train_seconds, formats, args.workers)  # fmt: skip
    bench = write_benchmark(args.out, args.num_scenarios, height, width, args.seed, args.workers)
    print(f"wrote {args.num_train} training videos to {train} and {args.num_scenarios} scenarios "
          f"({6 * args.num_scenarios} takes) to {bench} in {time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
