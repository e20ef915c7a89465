"""Resuming a run: the newest checkpoint that restores, damaged newer ones set aside.

A step folder can be damaged after it was committed (a truncated array file, a copy that stopped
half-way, an empty folder left by a tool). Resume tries the steps newest first; once one
restores, every newer one that did not is reported and renamed aside (never deleted) so that the
run can save those steps again. When none restores, nothing is moved and the error lists what was
tried and why, since then the cause may be the environment rather than the files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vgpt_jax.checkpoint.manager import Checkpointer


def _reason(error: Exception) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line[:300]}"


def restore_newest(
    ckpt: Checkpointer,
    abstract_state: Any,
    data_iterator=None,
    log: Callable[[str], None] = print,
) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that restores, or None when ``ckpt`` has none.

    ``abstract_state`` and ``data_iterator`` are as for :meth:`Checkpointer.restore`. Raises
    ValueError, listing every step tried and its error, when there are checkpoints and none restores.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            state = ckpt.restore(abstract_state, step=step, data_iterator=data_iterator)
        except Exception as e:  # noqa: BLE001 - whatever fails to read, an older step may restore
            failures.append((step, _reason(e)))
            continue
        for bad, reason in failures:
            log(f"checkpoint step {bad} cannot be restored ({reason}); moved to {ckpt.set_aside(bad)}")
        return step, state
    if failures:
        tried = "; ".join(f"step {step}: {reason}" for step, reason in failures)
        raise ValueError(
            f"no checkpoint in {ckpt.directory} can be restored (tried {tried}). Nothing was moved; "
            f"move {ckpt.directory} aside to start afresh"
        )
    return None
