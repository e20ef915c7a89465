"""Checks of a training run's workdir and data, in seconds, before any mesh or compilation.

A wrong path, a read-only workdir or a dataset with no usable video would otherwise surface only
after the tokenizer is loaded and the step compiled, a minute or more later. The checks raise the
errors a user can fix (ValueError, FileNotFoundError, FileExistsError, PermissionError), each with
one message that says what to pass instead. Config-only checks live in ``config.validate``.
"""

from __future__ import annotations

import os
import tempfile

import ml_collections
import numpy as np

from data_pipelines.clip_sampler import ClipSpec, SampleClip
from data_pipelines.labelled_source import open_labelled
from data_pipelines.pipeline import open_source
from data_pipelines.text_tokens import load_text_tokenizer
from vgpt_jax.train import workdir_lock


def check_workdir(workdir: str) -> None:
    """The workdir is (or can be made) a folder this process can write, and no live trainer holds it."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise FileExistsError(f"the workdir {workdir} is a file: pass a folder (it is created if missing)")
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise PermissionError(
            f"the workdir {workdir} cannot be written ({e.strerror or e}): pass a folder you can write to"
        ) from None
    workdir_lock.check(workdir)


def clip_spec(config: ml_collections.ConfigDict, downsample: int) -> ClipSpec:
    """The training clips of ``config.data`` for a tokenizer that downsamples ``downsample`` times."""
    d = config.data
    return ClipSpec.from_config(d, downsample=downsample, min_side=d.min_side)


def open_training_source(config: ml_collections.ConfigDict, spec: ClipSpec):
    """The source of ``config.data.source_path``, after decoding one clip from it as training does
    (rules, redraws and all); ValueError or FileNotFoundError, saying what to pass, when none can be."""
    d = config.data
    if not d.source_path:
        raise ValueError(
            "config.data.source_path is empty: pass --config.data.source_path=PATH (a folder of videos, "
            "one video file, an index .txt, ArrayRecord clips or latents, or a TFDS dataset folder)"
        )
    if not os.path.exists(d.source_path):
        raise FileNotFoundError(f"config.data.source_path={d.source_path} does not exist")
    source = _open(config)
    check_first_clip(source, spec, config.seed, f"config.data.source_path={d.source_path}")
    return source


def _open(config: ml_collections.ConfigDict):
    """The source of ``config.data``: for a condition, labelled videos whose every row has one (the
    step needs a condition for every row): a class in the table, or a text tokenized here, once;
    else :func:`open_source`'s."""
    d, co = config.data, config.condition
    if co.kind == "none":
        return open_source(d.source_path, d.split)
    if co.kind == "text" and (os.path.isdir(d.source_path) or d.split_file):
        raise ValueError(
            f'condition.kind = \'text\' reads texts from a JSONL manifest of {{"video": PATH, "text": '
            f"STR}} rows: pass one as config.data.source_path ({d.source_path} is a folder of videos"
            f"{' read through config.data.split_file' if d.split_file else ''}, which has classes, no text)"
        )
    source, _ = open_labelled(d.source_path, d.class_index or None, d.split_file or None)
    if co.kind == "class":
        source.require_classes(co.num_classes)
    else:
        source.tokenize_texts(
            load_text_tokenizer(co.text_tokenizer), co.max_text_tokens, config.model.vocab_size
        )
    return source


def check_first_clip(source, spec: ClipSpec, seed: int, what: str) -> None:
    """Decodes one clip of ``source`` as training does (rules, redraws and all); ValueError naming
    ``what`` when every draw is unreadable or refused."""
    try:
        SampleClip(source, spec).random_map(source[0], np.random.default_rng(seed))
    except RuntimeError as e:
        raise ValueError(f"{what}: {e}") from None
