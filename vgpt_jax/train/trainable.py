"""Which parameters a run trains: all of them, or with ``config.lora.rank > 0`` only the LoRA
adapters and the condition's own parameters (the class table: new, so nothing pre-trained to keep).

The train step splits the parameters into a trained tree and a frozen one, differentiates only
with respect to the trained tree (so the frozen kernels' gradients are never computed) and keeps
optimiser state for it alone; the frozen tree passes through the step unchanged, in the donated
state, on its pre-training shardings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
from flax import traverse_util

from vgpt_jax.checkpoint.params import load_params, saved_arrays
from vgpt_jax.models.video_gpt import is_condition_param
from vgpt_jax.nn.lora import is_adapter


def is_new(path: tuple[str, ...]) -> bool:
    """Whether the parameter at ``path`` is one that a pre-trained model lacks: a LoRA factor or a
    condition's own parameter. A LoRA run trains exactly these; a text condition adds none (it
    reads the Phi-3 token table, which stays frozen with the rest of the base)."""
    return is_adapter(path) or is_condition_param(path)


@dataclasses.dataclass(frozen=True)
class Trainable:
    """A split of a parameter tree (nested dicts, boxed or not) into (trained, frozen) trees.

    ``adapters_only`` True trains the parameters that :func:`is_new` names; False: every
    parameter is trained and the frozen tree is empty, so the split and the merge hand the tree
    through as it is.
    """

    adapters_only: bool = False

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Trainable:
        return cls(adapters_only=config.lora.rank > 0)

    def split(self, params: Any) -> tuple[Any, Any]:
        """(trained, frozen) subtrees of ``params``, each keeping the nesting of its leaves."""
        if not self.adapters_only:
            return params, {}
        flat = traverse_util.flatten_dict(params)
        trained = {path: leaf for path, leaf in flat.items() if is_new(path)}
        frozen = {path: leaf for path, leaf in flat.items() if not is_new(path)}
        return traverse_util.unflatten_dict(trained), traverse_util.unflatten_dict(frozen)

    def merge(self, trained: Any, frozen: Any) -> Any:
        """The inverse of :meth:`split`."""
        if not self.adapters_only:
            return trained
        flat = traverse_util.flatten_dict(trained) | traverse_util.flatten_dict(frozen)
        return traverse_util.unflatten_dict(flat)


ALL = Trainable()


def _names(paths: list[tuple[str, ...]], limit: int = 4) -> str:
    shown = ", ".join("/".join(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def load_pretrained(directory: str, params: Any, abstract: Any) -> Any:
    """``params`` (a run's initial parameters) with the ``model`` parameters of a params checkpoint
    (``vgpt convert`` or ``vgpt export``) put in; ``abstract``: their ShapeDtypeStructs carrying
    the shardings that the loaded arrays land on.

    LoRA adapters and a condition's own parameters (:func:`is_new`) that the checkpoint lacks
    keep their value from ``params`` (their init: a fresh adapter or class table on pre-trained
    weights); those it holds are loaded too. Any other parameter it
    lacks, a parameter the model has not, or a shape that differs is a ValueError naming them.
    """
    saved = saved_arrays(directory)
    if "model" not in saved:
        raise ValueError(f"{directory} holds {sorted(saved)}, no 'model' parameters to start from")
    have = traverse_util.flatten_dict(saved["model"])
    want = traverse_util.flatten_dict(abstract)
    unexpected = [p for p in have if p not in want]
    if any(is_adapter(p) for p in unexpected):
        raise ValueError(
            f"{directory} holds LoRA adapters that config.lora does not ask for "
            f"({_names([p for p in unexpected if is_adapter(p)])}): export it with the adapters merged "
            "(`vgpt export` without --keep-adapter), or set config.lora as in its config.json"
        )
    missing = [p for p in want if p not in have and not is_new(p)]
    reshaped = [p for p in want if p in have and have[p].shape != want[p].shape]
    if missing or unexpected or reshaped:
        problems = [
            f"{label}: {_names(paths)}"
            for label, paths in (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped))
            if paths
        ]
        raise ValueError(
            f"the parameters of {directory} do not fit this config's model ({'; '.join(problems)}): "
            "set config.model as in its config.json"
        )
    target = traverse_util.unflatten_dict({p: want[p] for p in want if p in have})
    loaded = traverse_util.flatten_dict(load_params(directory, {"model": target})["model"])
    return traverse_util.unflatten_dict(traverse_util.flatten_dict(params) | loaded)
