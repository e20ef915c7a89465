"""One wrapper over Orbax's CheckpointManager: train state + data iterator state + config JSON.

Saves are asynchronous (the step loop goes on while arrays are written) and keep the last
``max_to_keep`` steps. Restores take an abstract target that carries shardings, so a checkpoint
written on one mesh lands correctly on another (8 devices -> 4, a pod -> one GPU); without
shardings Orbax would put everything on one device.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from vgpt_jax import config as config_lib


def abstract_with_shardings(abstract_tree, shardings) -> Any:
    """ShapeDtypeStructs that carry the target shardings (Orbax's restore target)."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
    )


class Checkpointer:
    """Saves and restores ``state`` (any pytree of arrays), the config, and optionally a Grain
    iterator, under ``directory/<step>/``."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._last_saved: int | None = None

    def save(
        self,
        step: int,
        state,
        config: ml_collections.ConfigDict | None = None,
        data_iterator=None,
        force: bool = True,
    ) -> bool:
        """Starts saving ``step``; returns at once when async (call :meth:`wait` before exiting).

        Saving the step this checkpointer saved last again does nothing (returns False), so a
        preemption save on a step that was just saved is harmless.
        """
        if step == self._last_saved:
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if config is not None:
            items["config"] = ocp.args.JsonSave(config.to_dict())
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        self._last_saved = step
        return saved

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, abstract_state, step: int | None = None, data_iterator=None):
        """The state at ``step`` (default: latest) laid out as ``abstract_state`` says.

        ``abstract_state``: a pytree of ShapeDtypeStructs with shardings (see
        :func:`abstract_with_shardings`). ``data_iterator``, if given, is restored in place.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def restore_params(self, abstract_params, step: int | None = None):
        """Only ``state.params`` at ``step`` (default: latest), laid out as ``abstract_params`` says.

        For inference: the optimiser state (twice the parameters' size) is never read.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = {"params": abstract_params}
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
        # The manager only restores whole items with the handler they were saved with, so the
        # partial read goes through a PyTree checkpointer on the item's folder.
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(
                os.path.join(self.directory, str(step), "state"),
                args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
            )
        return restored["params"]

    def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        """The config saved with ``step`` (default: latest), fields it predates at their defaults."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return config_lib.with_defaults(restored["config"])

    def set_aside(self, step: int) -> str:
        """Renames ``directory/<step>`` to ``<step>.bad-<time>`` (never deletes it); returns the new path.

        The new name is outside Orbax's step names, so the step is no longer listed, restored or
        overwritten, and a run that reaches it again saves it afresh.
        """
        self.wait()
        source = epath.Path(self.directory) / str(step)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = source.with_name(f"{step}.bad-{stamp}"), 0
        while target.exists():  # set aside twice within a second
            n += 1
            target = source.with_name(f"{step}.bad-{stamp}-{n}")
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        return os.fspath(target)

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
