"""A small synthetic Physics-IQ benchmark in the official folder layout, for tests.

Three scenarios (a ball dropped, a ball rolling, an ink blot spreading) × 3 views × 2 takes, 64×48
pixels, 8 s per video (3 s conditioning + 5 s testing), at a few frame rates. Take 2 repeats take 1
with a slightly later start, a 1 % shift and its own sensor noise, like a second recording. Scenes
are functions of continuous time, so every fps and size shows the same motion.

The shipped real masks (`video-masks/real/{F}FPS`) are written with a deliberately simpler rule than
the benchmark's (difference to the first frame > 30), so a test can tell them from computed masks.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np

VIEWS = ("perspective-left", "perspective-center", "perspective-right")
TAKES = ("take-1", "take-2")
# name (with .mp4), category, description
SCENARIOS = (
    ("ball-drop.mp4", "Solid Mechanics", "A yellow ball is released and falls to the floor."),
    ("ball-roll.mp4", "Solid Mechanics", "A white ball rolls to the right and slows down."),
    ("ink-spread.mp4", "Fluid Dynamics", "A drop of ink spreads in water."),
)
_SCENARIO_INDEX = {name: i for i, (name, _, _) in enumerate(SCENARIOS)}
SIZE = (64, 48)  # (width, height) of the real videos
CONDITIONING_S, TESTING_S = 3, 5
VIEW_SHIFT = {"perspective-left": -0.12, "perspective-center": 0.0, "perspective-right": 0.12}
VIEW_BACKGROUND = {
    "perspective-left": (90, 80, 70),
    "perspective-center": (70, 90, 80),
    "perspective-right": (80, 70, 90),
}
TAKE_DELAY_S = {"take-1": 0.0, "take-2": 0.06}
TAKE_SHIFT = {"take-1": 0.0, "take-2": 0.01}


def take1_id(scenario_index: int, view: str) -> str:
    return f"{scenario_index * 3 + VIEWS.index(view) + 1:04d}"


def switch_frame(bench: Path, ident: str, view: str, scenario: str) -> Path:
    """Path of a take-1 video's switch frame."""
    return (
        bench / "switch-frames" / f"{ident}_switch-frames_anyFPS_{view}_{scenario.removesuffix('.mp4')}.jpg"
    )


def video_id(scenario_index: int, view: str, take: str) -> str:
    """take-1 IDs count from 0001, scenario-major; take-2 ID = take-1 ID + number of take-1 videos."""
    offset = len(SCENARIOS) * len(VIEWS) * TAKES.index(take)
    return f"{int(take1_id(scenario_index, view)) + offset:04d}"


def _discs(scenario: str, t: float) -> list[tuple[float, float, float, tuple[int, int, int]]]:
    """(x, y, radius, BGR colour) of the moving objects at time t (s), in units of the frame width/height."""
    if scenario == "ball-drop.mp4":  # held until 3.3 s, then free fall onto the floor at y = 0.8
        fall = max(t - 3.3, 0.0)
        return [(0.5, min(0.2 + 0.9 * fall**2, 0.8), 0.1, (40, 220, 250))]
    if scenario == "ball-roll.mp4":  # pushed at 3.0 s with 0.3 units/s, decelerating at 0.08 units/s²
        roll = min(max(t - 3.0, 0.0), 0.3 / 0.08)
        return [(0.15 + 0.3 * roll - 0.04 * roll**2, 0.7, 0.1, (240, 240, 120))]
    if scenario == "ink-spread.mp4":  # a blot growing from 3.2 s, and the drop that made it
        spread = max(t - 3.2, 0.0)
        drop_y = min(0.1 + 3.0 * max(t - 2.9, 0.0), 0.5)
        return [(0.5, 0.5, 0.04 + 0.07 * np.sqrt(spread), (60, 20, 10)), (0.5, drop_y, 0.05, (60, 20, 10))]
    raise ValueError(scenario)


def render(scenario: str, view: str, take: str, t: float, size: tuple[int, int] = SIZE) -> np.ndarray:
    """The frame at time t (s) of a real video, (H, W, 3) uint8 BGR."""
    width, height = size
    x = (np.arange(width) + 0.5) / width
    y = (np.arange(height) + 0.5) / height
    # Static background: per-view colour, a vertical gradient and a fixed texture below the motion threshold.
    texture = np.random.default_rng(VIEWS.index(view)).integers(-4, 5, (height, width, 1))
    frame = np.asarray(VIEW_BACKGROUND[view], float) + 40 * y[:, None, None] + texture
    for cx, cy, radius, colour in _discs(scenario, t - TAKE_DELAY_S[take]):
        cx += VIEW_SHIFT[view] + TAKE_SHIFT[take]
        inside = (x[None, :] - cx) ** 2 + ((y[:, None] - cy) * height / width) ** 2 <= radius**2
        frame[inside] = colour
    # Sensor noise: independent per take and instant.
    seed = [_SCENARIO_INDEX[scenario], VIEWS.index(view), TAKES.index(take), round(t * 1000)]
    noise = np.random.default_rng(seed).integers(-2, 3, frame.shape)
    return np.clip(np.rint(frame + noise), 0, 255).astype(np.uint8)


def write_video(path: Path, frames, fps: float, color: bool = True) -> Path:
    """Writes frames ((H, W, 3) BGR, or (H, W) with color=False) as an mp4v .mp4 at `fps`."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), color)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _stand_in_masks(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The shipped-mask stand-in: 255 where the grey level differs from frame 0's by more than 30."""
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(int) for f in frames]
    return [((np.abs(g - grey[0]) > 30) * 255).astype(np.uint8) for g in grey]


def build_benchmark(root: Path, fps_values=(8, 16), shipped_mask_fps=(8,)) -> Path:
    """Writes root/physics-IQ-benchmark and returns its path."""
    bench = root / "physics-IQ-benchmark"
    rows = []
    for take in TAKES:
        for s, (scenario, category, description) in enumerate(SCENARIOS):
            for view in VIEWS:
                ident = video_id(s, view, take)
                rows.append(
                    {
                        "scenario": f"{ident}_{view}_{take}_{scenario}",
                        "description": description,
                        "category": category,
                        "generated_video_name": f"{take1_id(s, view)}_{view}_{scenario}",
                    }
                )
                if take == "take-1":
                    switch = switch_frame(bench, ident, view, scenario)
                    switch.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(switch), render(scenario, view, take, float(CONDITIONING_S)))
                for fps in fps_values:
                    full = [
                        render(scenario, view, take, k / fps)
                        for k in range((CONDITIONING_S + TESTING_S) * fps)
                    ]
                    cut = CONDITIONING_S * fps
                    tail = f"{fps}FPS_{view}_{take}_{scenario}"
                    write_video(
                        bench / "full-videos" / take / f"{fps}FPS" / f"{ident}_full-videos_{tail}", full, fps
                    )
                    conditioning = bench / "split-videos" / "conditioning" / f"{fps}FPS"
                    write_video(conditioning / f"{ident}_conditioning-videos_{tail}", full[:cut], fps)
                    testing = bench / "split-videos" / "testing" / f"{fps}FPS"
                    write_video(testing / f"{ident}_testing-videos_{tail}", full[cut:], fps)
                    if fps in shipped_mask_fps:
                        masks = bench / "video-masks" / "real" / f"{fps}FPS" / f"{ident}_video-masks_{tail}"
                        write_video(masks, _stand_in_masks(full[cut:]), fps, color=False)
    (bench / "descriptions").mkdir(parents=True, exist_ok=True)
    with open(bench / "descriptions" / "descriptions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scenario", "description", "category", "generated_video_name"])
        writer.writeheader()
        writer.writerows(rows)
    return bench


def all_cases():
    """(take-1 ID, scenario index, scenario, view) of every test case."""
    return [
        (take1_id(s, view), s, scenario, view)
        for s, (scenario, _, _) in enumerate(SCENARIOS)
        for view in VIEWS
    ]


def real_take(bench: Path, out: Path, fps: int, take: str, ids=None) -> Path:
    """A generated folder holding copies of the real testing videos of `take`, named as generated videos."""
    out.mkdir(parents=True, exist_ok=True)
    for ident, s, scenario, view in all_cases():
        if ids is None or ident in ids:
            name = f"{video_id(s, view, take)}_testing-videos_{fps}FPS_{view}_{take}_{scenario}"
            shutil.copyfile(
                bench / "split-videos" / "testing" / f"{fps}FPS" / name, out / f"{ident}_{view}_{scenario}"
            )
    return out


def repeated_switch_frame(bench: Path, out: Path, fps: int) -> Path:
    """A generated folder where each video repeats its switch frame for 5 s: a model predicting no motion."""
    for ident, _, scenario, view in all_cases():
        frame = cv2.imread(str(switch_frame(bench, ident, view, scenario)))
        write_video(out / f"{ident}_{view}_{scenario}", [frame] * (TESTING_S * fps), fps)
    return out


def rendered(out: Path, fps: int, delay_s: float, size=SIZE, ids=None) -> Path:
    """A generated folder of take 1 rendered `delay_s` late at `size`: an imperfect model's output."""
    for ident, _, scenario, view in all_cases():
        if ids is None or ident in ids:
            times = [CONDITIONING_S - delay_s + k / fps for k in range(TESTING_S * fps)]
            write_video(
                out / f"{ident}_{view}_{scenario}",
                [render(scenario, view, "take-1", t, size) for t in times],
                fps,
            )
    return out
