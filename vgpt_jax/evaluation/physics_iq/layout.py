"""The Physics-IQ benchmark's folder layout and the inputs of one scoring run (spec §1, §2).

`resolve_inputs` checks everything a user can get wrong before any work starts, and raises a
FileNotFoundError/ValueError that names the file and the fix; nothing here writes to disk.

Real videos are the rows of `descriptions.csv` (:func:`find_descriptions` says where it is looked
for), whose `scenario` column reads `{ID}_{view}_{take}_{name}.mp4`. A test case is a take-1
video; its generated video is any `{ID}_….mp4` in the generated folder with that take-1 ID, and it
is compared with the take-1 and take-2 testing videos of the same view and scenario.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from vgpt_jax.evaluation.physics_iq.video import VideoInfo, probe

VIEWS = ("perspective-left", "perspective-center", "perspective-right")
TAKES = ("take-1", "take-2")
EVAL_SECONDS = 5  # the metrics compare the first 5 s after the switch frame
CONDITIONING_SECONDS = 3  # the benchmark's v2v input: the 3 s before the switch frame
DESCRIPTIONS = Path("descriptions") / "descriptions.csv"
DOWNLOAD_HINT = "download it with the benchmark's code/download_physics_iq_data.py"
_GENERATED_NAME = re.compile(r"(\d{4})_.*\.mp4")
_FPS_TOLERANCE = 1e-3  # container fps values within this of an integer count as that integer


@dataclasses.dataclass(frozen=True)
class RealVideo:
    """One recorded video of the benchmark: a row of descriptions.csv."""

    id: str  # 4 digits
    view: str  # one of VIEWS
    take: str  # one of TAKES
    scenario: str  # scenario name, ending in .mp4
    category: str

    def testing_name(self, fps: int) -> str:
        """File name of its 5 s testing part in split-videos/testing/{fps}FPS."""
        return f"{self.id}_testing-videos_{fps}FPS_{self.view}_{self.take}_{self.scenario}"

    def conditioning_name(self, fps: int) -> str:
        """File name of its 3 s conditioning part in split-videos/conditioning/{fps}FPS (the v2v input)."""
        return f"{self.id}_conditioning-videos_{fps}FPS_{self.view}_{self.take}_{self.scenario}"

    @property
    def generated_name(self) -> str:
        """The benchmark's name of a model's video for this test case: `{ID}_{view}_{scenario}`."""
        return f"{self.id}_{self.view}_{self.scenario}"

    def mask_name(self, fps: int) -> str:
        """File name of its motion mask in video-masks/real/{fps}FPS."""
        return f"{self.id}_video-masks_{fps}FPS_{self.view}_{self.take}_{self.scenario}"


@dataclasses.dataclass(frozen=True)
class Case:
    """One test case: a generated video and the two real takes it is compared with."""

    take1: RealVideo
    take2: RealVideo
    generated: Path


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything one scoring run reads, checked."""

    fps: int
    cases: tuple[Case, ...]  # sorted by take-1 ID, the benchmark's scenario order
    testing_dir: Path  # split-videos/testing/{fps}FPS
    shipped_masks_dir: Path | None  # video-masks/real/{fps}FPS, None when the benchmark lacks it
    num_test_cases: int  # take-1 videos in descriptions.csv (198 in the benchmark)
    long_videos: tuple[Path, ...]  # generated videos longer than 5 s: only their first 5 s count

    @property
    def num_frames(self) -> int:
        """Frames compared per video: 5 s."""
        return self.fps * EVAL_SECONDS


def split_dir(data_dir: Path, part: str, fps: int) -> Path:
    """split-videos/{part}/{fps}FPS of the benchmark: part is "conditioning" or "testing"."""
    return data_dir / "split-videos" / part / f"{fps}FPS"


def find_descriptions(data_dir: Path, descriptions: Path | None = None) -> Path:
    """The descriptions.csv of a run: `descriptions` when given, else the first that exists of
    `data_dir`/descriptions/descriptions.csv and descriptions/descriptions.csv beside `data_dir` (the
    benchmark repository's layout: its download script writes physics-IQ-benchmark/ next to its
    descriptions/). FileNotFoundError naming every place looked at."""
    if descriptions is not None:
        if not descriptions.is_file():
            raise FileNotFoundError(
                f"--descriptions {descriptions} does not exist: pass the benchmark repository's "
                f"{DESCRIPTIONS}"
            )
        return descriptions
    candidates = (data_dir / DESCRIPTIONS, data_dir.resolve().parent / DESCRIPTIONS)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no descriptions.csv in {candidates[0]} nor {candidates[1]}: pass --descriptions FILE, the "
        f"{DESCRIPTIONS} of the benchmark's code repository (google-deepmind/physics-IQ-benchmark)"
    )


def take_one_videos(descriptions: Path) -> list[RealVideo]:
    """The take-1 videos of descriptions.csv: one per test case, the ones a model is compared with."""
    return [v for v in read_descriptions(descriptions) if v.take == TAKES[0]]


def read_descriptions(path: Path) -> list[RealVideo]:
    """The real videos listed in the descriptions.csv at `path`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"scenario", "category"} <= set(rows[0]):
        raise ValueError(f"{path} needs the columns `scenario` and `category`: {DOWNLOAD_HINT}")
    videos = []
    for line, row in enumerate(rows, start=2):
        parts = row["scenario"].split("_")
        if (
            len(parts) != 4
            or not re.fullmatch(r"\d{4}", parts[0])
            or parts[1] not in VIEWS
            or parts[2] not in TAKES
            or not parts[3].endswith(".mp4")
        ):
            expected = "{ID}_{view}_{take}_{name}.mp4"
            raise ValueError(f"{path} line {line}: scenario {row['scenario']!r} is not `{expected}`")
        videos.append(RealVideo(*parts, category=row["category"]))
    return videos


def _pair_takes(videos: list[RealVideo], path: Path) -> dict[str, tuple[RealVideo, RealVideo]]:
    """take-1 ID -> (take 1, take 2) of the same view and scenario."""
    take2 = {(v.view, v.scenario): v for v in videos if v.take == "take-2"}
    pairs = {}
    for v in videos:
        if v.take == "take-1":
            if (v.view, v.scenario) not in take2:
                raise ValueError(f"{path} lists {v.id} ({v.view}, {v.scenario}) without its take-2 row")
            pairs[v.id] = (v, take2[(v.view, v.scenario)])
    return pairs


def find_generated(generated_dir: Path, test_ids: set[str]) -> dict[str, Path]:
    """take-1 ID -> generated video, for every .mp4 file directly in `generated_dir`."""
    if not generated_dir.is_dir():
        raise FileNotFoundError(f"the generated-video folder {generated_dir} does not exist")
    videos: dict[str, Path] = {}
    known = f"the take-1 IDs of {DESCRIPTIONS} ({min(test_ids)}–{max(test_ids)})"
    for path in sorted(p for p in generated_dir.iterdir() if p.suffix == ".mp4" and p.is_file()):
        match = _GENERATED_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: name generated videos `{{ID}}_….mp4` with one of {known}")
        case_id = match.group(1)
        if case_id not in test_ids:
            raise ValueError(f"{path}: unknown test-case ID {case_id}; generated videos are named by {known}")
        if case_id in videos:
            raise ValueError(
                f"{videos[case_id]} and {path} both have ID {case_id}: keep one video per test case"
            )
        videos[case_id] = path
    if not videos:
        raise FileNotFoundError(f"no .mp4 videos in {generated_dir}")
    return videos


def _integer_fps(path: Path, fps: float) -> int:
    """The integer frame rate of a video that plays at `fps`; ValueError if it is not one."""
    if fps <= 0 or abs(fps - round(fps)) > _FPS_TOLERANCE:
        raise ValueError(
            f"{path} plays at {fps:g} fps, not an integer: the benchmark's real videos come at integer fps "
            "(8, 16, 24 and 30 are shipped); write the generated videos at one of those"
        )
    return round(fps)


def _generated_fps(infos: dict[Path, VideoInfo], fps: int | None) -> int:
    """The one integer fps of all generated videos, which must equal `fps` when given."""
    by_fps: dict[int, list[str]] = {}
    for path, info in infos.items():
        by_fps.setdefault(_integer_fps(path, info.fps), []).append(path.name)
    if len(by_fps) > 1:
        groups = "; ".join(
            f"{f} fps: {', '.join(names[:3])}{' …' * (len(names) > 3)}" for f, names in by_fps.items()
        )
        raise ValueError(f"the generated videos play at different fps ({groups}): write all at one fps")
    ((found, names),) = by_fps.items()
    if fps is not None and fps != found:
        raise ValueError(
            f"--fps {fps} was given but the generated videos play at {found} fps (e.g. {names[0]}): "
            f"drop --fps, or write the videos at {fps} fps"
        )
    return found


def _check_real(path: Path, what: str) -> VideoInfo:
    """A real video or mask is present and decodable (its length is checked as it is read)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing: {DOWNLOAD_HINT}")
    return probe(path)


def _check_shipped_mask(path: Path, fps: int, num_frames: int) -> None:
    """A shipped real mask; masks downloaded before 2025-02-19 span the 8 s video and are rejected."""
    if _check_real(path, "the real mask").num_frames > num_frames + fps:
        raise ValueError(
            f"the real mask {path} is longer than 6 s: masks downloaded before 2025-02-19 span the whole 8 s "
            "video; download video-masks/real again"
        )


def resolve_inputs(
    data_dir: Path, generated_dir: Path, fps: int | None = None, descriptions: Path | None = None
) -> Inputs:
    """Checks and collects the inputs of scoring `generated_dir` against the benchmark in `data_dir`.

    fps: the generated videos' frame rate, read from them when None (they must agree with it).
    descriptions: the descriptions.csv; looked for by :func:`find_descriptions` when None.
    """
    if not data_dir.is_dir():
        raise FileNotFoundError(f"the Physics-IQ data folder {data_dir} does not exist: {DOWNLOAD_HINT}")
    descriptions = find_descriptions(data_dir, descriptions)
    pairs = _pair_takes(read_descriptions(descriptions), descriptions)
    generated = find_generated(generated_dir, set(pairs))
    infos = {path: probe(path) for path in generated.values()}
    fps = _generated_fps(infos, fps)
    num_frames = fps * EVAL_SECONDS

    testing_dir = split_dir(data_dir, "testing", fps)
    if not testing_dir.is_dir():
        present = (
            sorted(p.name for p in testing_dir.parent.glob("*FPS")) if testing_dir.parent.is_dir() else []
        )
        raise FileNotFoundError(
            f"{testing_dir} does not exist, so videos at {fps} fps cannot be scored: "
            f"{DOWNLOAD_HINT}, or generate at an fps that {data_dir} has ({', '.join(present) or 'none'})"
        )
    shipped_masks_dir = data_dir / "video-masks" / "real" / f"{fps}FPS"
    if not shipped_masks_dir.is_dir():
        shipped_masks_dir = None

    short = [path for path, info in infos.items() if info.num_frames < num_frames]
    if short:
        frames = infos[short[0]].num_frames
        more = f" (and {len(short) - 1} more videos are too short)" if len(short) > 1 else ""
        raise ValueError(
            f"{short[0]} has {frames} frames ({frames / fps:.3f} s at {fps} fps){more}: Physics-IQ compares "
            f"the 5 s after the switch frame, so generate {num_frames} frames (5.000 s) per video"
        )

    cases = []
    for case_id, path in sorted(generated.items()):
        take1, take2 = pairs[case_id]
        for video in (take1, take2):
            _check_real(testing_dir / video.testing_name(fps), "the real testing video")
            if shipped_masks_dir is not None:
                _check_shipped_mask(shipped_masks_dir / video.mask_name(fps), fps, num_frames)
        cases.append(Case(take1, take2, path))
    return Inputs(
        fps=fps,
        cases=tuple(cases),
        testing_dir=testing_dir,
        shipped_masks_dir=shipped_masks_dir,
        num_test_cases=len(pairs),
        long_videos=tuple(path for path, info in infos.items() if info.num_frames > num_frames),
    )
