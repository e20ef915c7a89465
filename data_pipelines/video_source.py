"""A Grain random-access source over video files: a folder, a ``.txt`` index like the official one,
or a single video file (a one-video dataset).

The source only lists files; decoding happens in the clip sampler (inside Grain's workers). An
index line is ``path<TAB>frame_count`` (path relative to the index's folder unless absolute); the
frame count lets the length rule run without opening the file. A folder is walked recursively for
the extensions in :data:`VIDEO_EXTENSIONS`, in sorted order, so indices are stable across hosts.

At construction the source looks for one readable video among the first ``probe_limit`` entries
and fails with an error that says where it looked and what it found if there is none, so a wrong
path fails at start instead of after every draw has been skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import os

from data_pipelines import video_io

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")


@dataclasses.dataclass(frozen=True)
class VideoRef:
    """One source entry: a file and, from an index, its frame count (None: read it from the file)."""

    path: str
    num_frames: int | None = None


def list_folder(root: str) -> list[VideoRef]:
    """Video files under ``root`` (recursive, sorted by path)."""
    refs = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        refs.extend(
            VideoRef(os.path.join(folder, f)) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS)
        )
    return refs


def read_index(index_path: str) -> list[VideoRef]:
    """Entries of a ``path<TAB>frame_count`` index; blank lines and lines starting with '#' are skipped."""
    base = os.path.dirname(os.path.abspath(index_path))
    try:
        with open(index_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(
            f"{index_path} is not a text index: pass a folder of videos, one video file ("
            f"{', '.join(VIDEO_EXTENSIONS)}), or a .txt index of 'path<TAB>frame_count' lines"
        ) from None
    refs = []
    for line_number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        path, sep, count = line.rpartition("\t")
        if not sep or not count.strip().isdigit():
            raise ValueError(
                f"{index_path}:{line_number}: expected 'path<TAB>frame_count', got {line!r}; "
                "write one video per line with its frame count after a tab"
            )
        refs.append(VideoRef(os.path.join(base, path), int(count)))
    return refs


def _describe_folder(root: str) -> str:
    counts = collections.Counter(
        os.path.splitext(f)[1].lower() or "<none>" for _, _, fs in os.walk(root) for f in fs
    )
    if not counts:
        return "it is empty"
    listing = ", ".join(f"{n} x {ext}" for ext, n in counts.most_common(8))
    return f"it holds {sum(counts.values())} files ({listing})"


def require_readable(refs: list[VideoRef], where: str, probe_limit: int = 32) -> None:
    """ValueError unless one of the first ``probe_limit`` of ``refs`` decodes; ``where`` names the
    dataset in the message (a wrong path then fails at start, not after every draw was skipped)."""
    failures = []
    for ref in refs[:probe_limit]:
        try:
            video_io.read_frames(ref.path, [0])
            return
        except video_io.BadVideoError as e:
            failures.append(e)
    shown = "; ".join(f"{os.path.basename(e.path)}: {e.reason}" for e in failures[:5])
    raise ValueError(
        f"no readable video in {where}: it lists {len(refs)} video files and none of the "
        f"first {len(failures)} could be decoded ({shown}); check the files (e.g. with ffprobe) "
        "or the path"
    )


class VideoFileSource:
    """Grain ``RandomAccessDataSource`` of :class:`VideoRef` (folder, ``.txt`` index or one video)."""

    def __init__(self, path: str, probe_limit: int = 32):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"video dataset {path!r} does not exist; pass a folder of videos or a .txt index "
                "of 'path<TAB>frame_count' lines"
            )
        self.path = path
        if os.path.isdir(path):
            self.refs = list_folder(path)
            if not self.refs:
                raise ValueError(
                    f"no video files in {path!r} (looked recursively for {', '.join(VIDEO_EXTENSIONS)}); "
                    f"{_describe_folder(path)}"
                )
        elif path.lower().endswith(VIDEO_EXTENSIONS):
            self.refs = [VideoRef(path)]  # one video file: a one-video dataset
        else:
            self.refs = read_index(path)
            if not self.refs:
                raise ValueError(f"the index {path!r} lists no videos; add 'path<TAB>frame_count' lines")
        require_readable(self.refs, repr(path), probe_limit)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> VideoRef:
        return self.refs[index]

    def __repr__(self) -> str:
        return f"VideoFileSource({self.path!r}, {len(self.refs)} videos)"
