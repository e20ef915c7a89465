"""``vgpt generate-set``: a folder of generated videos for ``vgpt fvd --generated``.

Which videos depends on the checkpoint's ``condition.kind``:

* ``class`` with ``--class-balanced``: N / num_classes videos of every class, in
  ``OUT/<class>/<i>.mp4``, ``<class>`` the class's name where the training data's ``classInd.txt``
  is at hand (``--class-index``, else the one the config's data fields name), else its number: the
  first sub-folder is the class ``vgpt fvd --class-balanced`` draws by;
* ``text`` with ``--prompts FILE``: ``OUT/<i>.mp4``, the file's prompts (one a line) in turn;
* ``none``: ``OUT/<i>.mp4`` from nothing.

Video i is in batch i // B (B = :attr:`Predictor.batch_size`), seeded by the batch's index, so the
set is the same whether it is made in one run or resumed: a batch whose videos all exist is
skipped without loading the model, and a video is written under its name only once complete.
``OUT/generate_set.json`` holds the settings and every video's condition; a rerun with other
settings is refused (its videos would not be one set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

HELP = "write N generated videos (class-balanced, from prompts, or unconditioned) for vgpt fvd"
CONFIG = "overrides"
SETTINGS = "generate_set.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vgpt_jax.sample.options import add_sampling_arguments, positive_int

    parser.add_argument("--checkpoint", required=True, type=Path, help="a training workdir or an export")
    parser.add_argument("--output-dir", required=True, type=Path, help="where the videos go")
    parser.add_argument("--num", required=True, type=positive_int, help="videos in the set N")
    parser.add_argument("--num-frames", required=True, type=positive_int, help="frames per video M")
    parser.add_argument(
        "--class-balanced",
        action="store_true",
        help="a class-conditioned checkpoint: N / num_classes videos of each class, in class sub-folders",
    )
    parser.add_argument(
        "--prompts", type=Path, help="a text-conditioned checkpoint: prompts, one a line, cycled to N"
    )
    parser.add_argument(
        "--class-index",
        type=Path,
        help="a classInd.txt naming the class folders (default: the training data's, if at hand)",
    )
    parser.add_argument(
        "--fps", type=positive_int, help="output fps (default: the checkpoint's train.sample_fps)"
    )
    add_sampling_arguments(parser)


@dataclasses.dataclass(frozen=True)
class Video:
    """One video of the set: its file relative to the output folder, and its condition."""

    file: str
    class_id: int | None = None
    prompt: str | None = None


def plan(
    kind: str,
    num: int,
    num_classes: int = 0,
    class_names: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    class_balanced: bool = False,
) -> list[Video]:
    """The N videos for a checkpoint of condition ``kind`` (see the module docstring).

    Classes and prompts alternate (video i has class i mod num_classes), so every batch, and any
    part of an interrupted set, spans them. ValueError naming the flag a kind needs or refuses, or
    an N that does not split evenly over the classes.
    """
    this = f"this checkpoint has condition.kind = {kind!r}"
    if class_balanced and kind != "class":
        raise ValueError(f"--class-balanced is for a class-conditioned checkpoint; {this}")
    if kind == "class" and not class_balanced:
        raise ValueError(f"{this} ({num_classes} classes): pass --class-balanced")
    if prompts is not None and kind != "text":
        raise ValueError(f"--prompts is for a text-conditioned checkpoint; {this}")
    if kind == "text" and prompts is None:
        raise ValueError("this checkpoint is text-conditioned: pass --prompts FILE (one prompt a line)")
    if kind == "class":
        if num % num_classes:
            raise ValueError(
                f"--num {num} does not split evenly over the {num_classes} classes: give a multiple of "
                f"{num_classes}"
            )
        folders = class_names or [str(k) for k in range(num_classes)]
        return [
            Video(f"{folders[i % num_classes]}/{i // num_classes}.mp4", class_id=i % num_classes)
            for i in range(num)
        ]
    if kind == "text":
        return [Video(f"{i}.mp4", prompt=prompts[i % len(prompts)]) for i in range(num)]
    return [Video(f"{i}.mp4") for i in range(num)]


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of ``path``, stripped; ValueError if there are none."""
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompt: give one a line")
    return prompts


def class_names(config, class_index: str | os.PathLike | None) -> list[str] | None:
    """The class names for folders: ``class_index`` if given, else the ``classInd.txt`` the
    training data's fields name (:func:`class_index_file`) if it exists here; None: numbers.

    The config keeps no names, only where the training run read them. ValueError if the index
    does not have ``condition.num_classes`` names.
    """
    from data_pipelines.labelled_source import class_index_file, read_class_index

    d = config.data
    index = class_index
    if index is None:
        # a trained checkpoint's source_path is set; its index file may not be on this machine
        index = class_index_file(d.source_path, d.class_index, d.split_file) if d.source_path else None
        if index is None or not os.path.isfile(index):
            return None
    names = read_class_index(str(index))
    if len(names) != config.condition.num_classes:
        raise ValueError(
            f"{index} names {len(names)} classes; the checkpoint has condition.num_classes = "
            f"{config.condition.num_classes}"
        )
    return names


def check_settings(path: Path, settings: dict) -> None:
    """Writes ``settings`` to ``path``, or, from an earlier run, checks they are the same;
    ValueError naming the fields that differ."""
    settings = json.loads(json.dumps(settings))  # as they read back: tuples become lists
    if path.exists():
        earlier = json.loads(path.read_text())
        changed = sorted(k for k in settings.keys() | earlier.keys() if settings.get(k) != earlier.get(k))
        if changed:
            raise ValueError(
                f"{path.parent} holds a set made with other settings ({', '.join(changed)}: not as in "
                f"{path.name}): give another --output-dir, or the same settings to resume it"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def main(args: argparse.Namespace) -> int:
    from data_pipelines import video_io
    from vgpt_jax.checkpoint.inference import checkpoint_config, inference_mesh
    from vgpt_jax.device_stats import CompileClock
    from vgpt_jax.sample import options
    from vgpt_jax.sample.predict import Predictor, batch_size, condition_ids, sampling_overrides

    sampling = options.sampling_overrides(args)
    config = checkpoint_config(args.checkpoint, [*args.config_overrides, *sampling_overrides(**sampling)])
    co = config.condition
    prompts = None if args.prompts is None else read_prompts(args.prompts)
    names = class_names(config, args.class_index) if co.kind == "class" else None
    videos = plan(co.kind, args.num, co.num_classes, names, prompts, args.class_balanced)
    class_ids = [v.class_id for v in videos] if co.kind == "class" else None
    # every condition now: a prompt too long fails before any video is made
    condition = condition_ids(config, class_ids, None if prompts is None else [v.prompt for v in videos])
    size = batch_size(config, inference_mesh(config))
    fps = args.fps or config.train.sample_fps
    out = args.output_dir
    check_settings(
        out / SETTINGS,
        {
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "overrides": list(args.config_overrides),
            "num": args.num,
            "num_frames": args.num_frames,
            "fps": fps,
            "batch_size": size,  # the seeds follow the batches
            "condition": co.kind,
            "sampling": config.sampling.to_dict(),
            "videos": [{k: v for k, v in dataclasses.asdict(v).items() if v is not None} for v in videos],
        },
    )

    predictor = None  # loaded for the first batch with a video missing
    num_batches = -(-len(videos) // size)
    with CompileClock() as clock:
        for index in range(num_batches):
            start = index * size
            batch = videos[start : start + size]
            missing = [v for v in batch if not (out / v.file).exists()]
            if missing:
                predictor = predictor or Predictor.from_checkpoint(
                    args.checkpoint, overrides=args.config_overrides, **sampling
                )
                rows = None if condition is None else condition[start : start + len(batch)]
                made = predictor.generate(
                    rows, args.num_frames, True, num_videos=len(batch), first_batch=index
                )
                for video, frames in zip(batch, made, strict=True):
                    if video in missing:
                        (out / video.file).parent.mkdir(parents=True, exist_ok=True)
                        video_io.write_mp4(out / video.file, frames, fps)
            kept = len(batch) - len(missing)
            print(f"batch {index + 1}/{num_batches}: wrote {len(missing)} videos, kept {kept}", flush=True)
    print(
        f"{len(videos)} videos of {args.num_frames} frames in {out} ({SETTINGS}: the settings); "
        f"{clock.wall_s:.1f} s, {clock.compile_s:.1f} s of it compiling"
    )
    return 0
