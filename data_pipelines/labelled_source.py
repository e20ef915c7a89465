"""Labelled videos as a Grain random-access source: a JSONL manifest, or the UCF-101 layout.

A **manifest** has one JSON object a line, ``{"video": PATH, "label": INT}`` or
``{"video": PATH, "text": STR}`` (both may be given; other keys are ignored), ``PATH`` relative to
the manifest's folder unless absolute. Blank lines are skipped.

The **UCF-101 layout** is read as distributed: ``classInd.txt`` lines ``1 ApplyEyeMakeup`` (classes
numbered from 1), split files ``trainlist0N.txt`` with lines ``ApplyEyeMakeup/v_..._g08_c01.avi 1``
and ``testlist0N.txt`` with the path only; paths are relative to the video folder (``UCF-101/``).
A video's class is its folder's name, looked up in the class index; labels here count from 0
(``classInd`` number − 1). A folder of class sub-folders without split files is read the same way
(:func:`list_class_folders`).

Rows that cannot be used are skipped and counted, never fatal one by one: a malformed line, a row
without a usable label or text, a class the index does not know, a label that disagrees with the
video's folder (``bad_rows``), and a video file that does not exist or is empty (``missing``).
Files that exist but do not decode are found where they are decoded, and counted there (the clip
sampler's ``skipped``, the feature extractor's ``unreadable``). Every entry is a
:class:`~data_pipelines.video_source.VideoRef`, so the clip sampler takes this source as it takes a
folder of videos.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import TYPE_CHECKING

from data_pipelines.text_tokens import text_ids
from data_pipelines.video_source import VideoRef, list_folder, require_readable

if TYPE_CHECKING:
    import tokenizers

BAD_ROWS, MISSING = "bad_rows", "missing"
MAX_PROBLEMS = 20  # problems kept with their reasons (the counts cover every one)


@dataclasses.dataclass(frozen=True)
class LabelledVideo(VideoRef):
    """A video file with its id (the path as the manifest or split file names it, '/'-separated),
    its class label (0-based) and/or its text, and that text's condition ids (P,) (-1 pads) once
    :meth:`LabelledVideoSource.tokenize_texts` has filled them."""

    video_id: str = ""
    label: int | None = None
    text: str | None = None
    text_ids: tuple[int, ...] | None = None


@dataclasses.dataclass
class Listing:
    """The usable entries of a labelled list, the count of each kind of skipped row and the first
    ``MAX_PROBLEMS`` problems as ``"where: why"`` lines."""

    videos: list[LabelledVideo] = dataclasses.field(default_factory=list)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    problems: list[str] = dataclasses.field(default_factory=list)
    _ids: set[str] = dataclasses.field(default_factory=set, repr=False)

    def skip(self, kind: str, where: str, why: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {why}")

    def add(self, path: str, where: str, video_id: str, **fields) -> None:
        """Keeps the entry if its file exists and is not empty (else counted as missing) and its id
        is new (else a bad row: an id names one video)."""
        if video_id in self._ids:
            self.skip(BAD_ROWS, where, f"{video_id} is listed twice")
        elif not os.path.isfile(path):
            self.skip(MISSING, where, f"no such file {path}")
        elif os.path.getsize(path) == 0:
            self.skip(MISSING, where, f"{path} is empty")
        else:
            self._ids.add(video_id)
            self.videos.append(LabelledVideo(path, video_id=video_id, **fields))

    def describe_skips(self) -> str:
        """'' when nothing was skipped, else e.g. '2 bad rows, 1 missing file skipped (first: ...)'."""
        if not self.counts:
            return ""
        parts = [f"{self.counts[BAD_ROWS]} bad rows"] if self.counts[BAD_ROWS] else []
        parts += [f"{self.counts[MISSING]} missing files"] if self.counts[MISSING] else []
        return f"{', '.join(parts)} skipped (first: {self.problems[0]})"


def _base(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _manifest_fields(row) -> tuple[dict, str]:
    """({video_id, label, text}, '') of a parsed manifest row, or ({}, why it is unusable)."""
    if not isinstance(row, dict):
        return {}, f"expected a JSON object, got {type(row).__name__}"
    video, label, text = row.get("video"), row.get("label"), row.get("text")
    if not isinstance(video, str) or not video:
        return {}, 'no "video" path'
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
        return {}, f'"label" must be an integer >= 0, got {label!r}'
    if text is not None and not isinstance(text, str):
        return {}, f'"text" must be a string, got {text!r}'
    if label is None and text is None:
        return {}, 'neither "label" nor "text"'
    return {"video_id": video.replace(os.sep, "/"), "label": label, "text": text}, ""


def read_manifest(path: str) -> Listing:
    """The entries of a JSONL manifest (see the module docstring); bad rows and missing files counted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the manifest {path} does not exist")
    base, listing = _base(path), Listing()
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                fields, why = _manifest_fields(json.loads(line))
            except json.JSONDecodeError as e:
                fields, why = {}, f"not JSON ({e.msg})"
            if why:
                listing.skip(BAD_ROWS, where, why)
            else:
                listing.add(os.path.join(base, fields["video_id"]), where, **fields)
    return listing


def read_class_index(path: str) -> list[str]:
    """Class names of a UCF-101 ``classInd.txt`` (``N NAME`` lines, N = 1, 2, ...): name of label N − 1.

    A broken index is an error (every label depends on it), not a skipped row.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the class index {path} does not exist (UCF-101's classInd.txt)")
    names = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            number, _, name = line.strip().partition(" ")
            if not number.isdigit() or not name.strip() or int(number) in names:
                raise ValueError(
                    f"{path}:{line_number}: expected 'NUMBER CLASS' with a new number, got {line.strip()!r}"
                )
            names[int(number)] = name.strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(
            f"{path}: the classes must be numbered 1..{len(names)} without gaps, got {sorted(names)}"
        )
    return [names[n] for n in range(1, len(names) + 1)]


def read_ucf101_split(split_file: str, video_root: str, class_names: list[str]) -> Listing:
    """The videos a UCF-101 split file names (``trainlist0N.txt`` or ``testlist0N.txt``), under
    ``video_root``, labelled by their class folder through ``class_names`` (:func:`read_class_index`).

    A line's own label (train lists), when given, must agree with its folder's class.
    """
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"the split file {split_file} does not exist (e.g. UCF-101's trainlist01.txt)"
        )
    labels = {name: i for i, name in enumerate(class_names)}
    listing = Listing()
    with open(split_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{split_file}:{line_number}"
            video_id, given = fields[0].replace("\\", "/"), fields[1:]
            folder = video_id.split("/")[0] if "/" in video_id else ""
            if len(given) > 1 or (given and not given[0].isdigit()):
                listing.skip(BAD_ROWS, where, f"expected 'CLASS/VIDEO [NUMBER]', got {line.strip()!r}")
            elif folder not in labels:
                listing.skip(BAD_ROWS, where, f"class folder {folder!r} is not in the class index")
            elif given and int(given[0]) != labels[folder] + 1:
                why = f"label {given[0]} but {folder} is class {labels[folder] + 1} in the class index"
                listing.skip(BAD_ROWS, where, why)
            else:
                listing.add(
                    os.path.join(video_root, video_id), where, video_id=video_id, label=labels[folder]
                )
    return listing


def list_class_folders(root: str, class_names: list[str] | None = None) -> tuple[Listing, list[str]]:
    """Every video under ``root`` (recursive, sorted), labelled by its first sub-folder: through
    ``class_names`` if given (a folder it lacks is a bad row), else the sorted folder names.

    Returns (listing, class names). Video ids are the paths relative to ``root``.
    """
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a folder of class sub-folders of videos")
    relative = [os.path.relpath(ref.path, root).replace(os.sep, "/") for ref in list_folder(root)]
    if class_names is None:
        class_names = sorted({r.split("/")[0] for r in relative if "/" in r})
    labels = {name: i for i, name in enumerate(class_names)}
    listing = Listing()
    for video_id in relative:
        folder = video_id.split("/")[0] if "/" in video_id else ""
        if folder not in labels:
            why = (
                "not in a class sub-folder"
                if not folder
                else f"class folder {folder!r} is not in the class index"
            )
            listing.skip(BAD_ROWS, os.path.join(root, video_id), why)
        else:
            listing.add(os.path.join(root, video_id), video_id, video_id=video_id, label=labels[folder])
    return listing, class_names


class LabelledVideoSource:
    """Grain ``RandomAccessDataSource`` of :class:`LabelledVideo`, with the skip counts of its listing.

    Fails at construction when nothing usable is left, or when none of the first ``probe_limit``
    entries decodes (a wrong folder), saying what was skipped.
    """

    def __init__(self, listing: Listing, where: str, probe_limit: int = 32):
        self.listing, self.where = listing, where
        if not listing.videos:
            skipped = listing.describe_skips() or "it lists no videos"
            raise ValueError(f"no usable labelled video in {where}: {skipped}")
        require_readable(listing.videos, where, probe_limit)

    @classmethod
    def from_manifest(cls, path: str, probe_limit: int = 32) -> LabelledVideoSource:
        return cls(read_manifest(path), f"the manifest {path}", probe_limit)

    @classmethod
    def from_ucf101(
        cls, video_root: str, split_file: str, class_index: str, probe_limit: int = 32
    ) -> LabelledVideoSource:
        listing = read_ucf101_split(split_file, video_root, read_class_index(class_index))
        return cls(listing, f"{split_file} (videos under {video_root})", probe_limit)

    def require_classes(self, num_classes: int) -> None:
        """ValueError naming the first entry without a class label in [0, num_classes), if any:
        a class-conditioned run would otherwise fail deep in its step, or index past the table."""
        for video in self.listing.videos:
            if video.label is None or not 0 <= video.label < num_classes:
                raise ValueError(
                    f"{video.video_id} in {self.where} has label {video.label!r}: a class-conditioned run "
                    f"needs a label in [0, {num_classes}) for every video (condition.num_classes = "
                    f"{num_classes})"
                )

    def tokenize_texts(self, tokenizer: tokenizers.Tokenizer, length: int, vocab_size: int) -> None:
        """Fills every entry's ``text_ids`` (``length`` ids, -1 pads, see :func:`text_ids`): once,
        here, rather than per clip in the loader's workers. ValueError naming the first entry
        without a text, or whose text has more than ``length`` tokens or an id past the model's
        ``vocab_size`` rows: a text-conditioned run would otherwise fail mid-epoch, or train the
        null condition (an empty text is all pads) under a real video's frames."""
        videos = []
        for video in self.listing.videos:
            if not (video.text or "").strip():
                raise ValueError(
                    f'{video.video_id} in {self.where} has no "text": a text-conditioned run needs a '
                    "non-empty text for every video"
                )
            try:
                ids = text_ids(tokenizer, video.text, length, vocab_size)
            except ValueError as e:
                raise ValueError(f"{video.video_id} in {self.where}: {e}") from None
            videos.append(dataclasses.replace(video, text_ids=tuple(ids.tolist())))
        self.listing.videos = videos

    @property
    def counts(self) -> dict[str, int]:
        """Rows skipped while listing: ``{bad_rows, missing}``."""
        return {BAD_ROWS: self.listing.counts[BAD_ROWS], MISSING: self.listing.counts[MISSING]}

    def __len__(self) -> int:
        return len(self.listing.videos)

    def __getitem__(self, index: int) -> LabelledVideo:
        return self.listing.videos[index]

    def __repr__(self) -> str:
        return f"LabelledVideoSource({self.where}, {len(self)} videos)"


def class_index_file(path: str, class_index: str | None = None, split_file: str | None = None) -> str | None:
    """The ``classInd.txt`` that names the classes of the labelled source ``path`` (see
    :func:`open_labelled`): ``class_index``, else the one beside ``split_file``, else the folder's
    own if it has one; None: a folder's classes are its sorted sub-folder names, a manifest's none."""
    if class_index:
        return class_index
    if split_file:
        return os.path.join(os.path.dirname(os.path.abspath(split_file)), "classInd.txt")
    own_index = os.path.join(path, "classInd.txt")
    return own_index if os.path.isfile(own_index) else None


def open_labelled(
    path: str, class_index: str | None = None, split_file: str | None = None
) -> tuple[LabelledVideoSource, list[str]]:
    """(source, class names) of a manifest (a file) or a folder of class sub-folders.

    A folder's classes come from ``class_index`` (a ``classInd.txt``), else from ``classInd.txt``
    in the folder if there is one, else from its sorted sub-folder names. A manifest has no class
    names ([]); ``class_index`` then names them. With ``split_file`` (UCF-101's ``trainlist0N.txt``)
    the folder's videos are those it lists, numbered by ``class_index`` or else the
    ``classInd.txt`` beside it.
    """
    index = class_index_file(path, class_index, split_file)
    names = read_class_index(index) if index else None
    if split_file:
        return LabelledVideoSource.from_ucf101(path, split_file, index), names
    if os.path.isdir(path):
        listing, names = list_class_folders(path, names)
        return LabelledVideoSource(listing, f"the folder {path}"), names
    return LabelledVideoSource(read_manifest(path), f"the manifest {path}"), names or []
