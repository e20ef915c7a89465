"""Resuming a run: the newest checkpoint that restores, damaged newer ones set aside, and the
config compared with the one the checkpoint was saved with.

A step folder can be damaged after it was committed (a truncated array file, a copy that stopped
half-way, an empty folder left by a tool). Resume tries the steps newest first; once one
restores, every newer one that did not is reported and renamed aside (never deleted) so that the
run can save those steps again. When none restores, nothing is moved and the error lists what was
tried and why, since then the cause may be the environment rather than the files.

Fields that differ from the saved config are named: those that change the train state's shapes
or structure refuse to resume (the restore could not fit, or would mean another model), the
others (steps, logging, the learning-rate schedule, data, mesh: restore reshards) are listed in
a warning and the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ml_collections

from vgpt_jax.checkpoint.manager import Checkpointer

# Fields in a trainer's state sections that leave the state as it is: how the model computes, and
# the tokenizer's training recipe and where its weights come from.
SAME_STATE_FIELDS = (
    "model.dtype",
    "model.remat_policy",
    "model.attention.",
    "tokenizer.weights",
    "tokenizer.scaling_factor",
    "tokenizer.dtype",
    "tokenizer.precision",
    "tokenizer.chunk_frames",
    "tokenizer.logical_axis_rules",
    "tokenizer.train.",
    "tokenizer.optim.",
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def config_changes(
    saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict
) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) of every field that differs, sorted; "<absent>" stands for a
    field only one side has. Tuples and lists compare as the JSON they are saved as."""
    before, after = (_flat(json.loads(json.dumps(c.to_dict()))) for c in (saved, new))
    absent = "<absent>"
    return [
        (field, before.get(field, absent), after.get(field, absent))
        for field in sorted(before.keys() | after.keys())
        if before.get(field, absent) != after.get(field, absent)
    ]


def changes_state(field: str, old: Any, new: Any, state_sections: tuple[str, ...], optim: str) -> bool:
    """Whether changing ``field`` from ``old`` to ``new`` changes a train state's shapes or structure.

    ``state_sections``: the config sections that define the state (e.g. ``("model.", "tokenizer.")``);
    ``optim``: the optimiser's section, whose ``grad_clip_norm`` adds a transform when it leaves 0.
    """
    if field == f"{optim}.grad_clip_norm":
        return isinstance(old, (int, float)) and isinstance(new, (int, float)) and (old > 0) != (new > 0)
    return field.startswith(state_sections) and not field.startswith(SAME_STATE_FIELDS)


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{field} {old!r} -> {new!r}" for field, old, new in changes)


def _reason(error: Exception) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line[:300]}"


def restore_newest(
    ckpt: Checkpointer,
    abstract_state: Any,
    config: ml_collections.ConfigDict,
    *,
    state_sections: tuple[str, ...],
    optim: str,
    data_iterator=None,
    log: Callable[[str], None] = print,
) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that restores, or None when ``ckpt`` has none.

    ``abstract_state`` and ``data_iterator`` are as for :meth:`Checkpointer.restore`; ``config``
    is the run's, compared with the checkpoint's (``state_sections`` and ``optim`` as for
    :func:`changes_state`). Raises ValueError naming the fields when they change the state, and,
    listing every step tried and its error, when there are checkpoints and none restores.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            saved = ckpt.restore_config(step)
        except Exception as e:  # noqa: BLE001 - whatever fails to read, an older step may restore
            failures.append((step, _reason(e)))
            continue
        changes = config_changes(saved, config)
        refused = [c for c in changes if changes_state(*c, state_sections, optim)]
        if refused:
            raise ValueError(
                f"the config differs from the one checkpoint {step} in {ckpt.directory} was saved with, in "
                f"fields that change the train state: {describe_changes(refused)}. Resume with the saved "
                "values, or train in a new workdir (train.init_from starts it from exported parameters)"
            )
        try:
            state = ckpt.restore(abstract_state, step=step, data_iterator=data_iterator)
        except Exception as e:  # noqa: BLE001
            failures.append((step, _reason(e)))
            continue
        for bad, reason in failures:
            log(f"checkpoint step {bad} cannot be restored ({reason}); moved to {ckpt.set_aside(bad)}")
        if changes:
            log(
                f"warning: resuming step {step} with a config changed from the saved one: "
                f"{describe_changes(changes)}"
            )
        return step, state
    if failures:
        tried = "; ".join(f"step {step}: {reason}" for step, reason in failures)
        raise ValueError(
            f"no checkpoint in {ckpt.directory} can be restored (tried {tried}). Nothing was moved; "
            f"move {ckpt.directory} aside to start afresh"
        )
    return None
