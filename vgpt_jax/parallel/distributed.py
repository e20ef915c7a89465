"""Multi-process start-up on JAX's own distributed runtime.

Every process runs the same command. The coordinator, process count and id come from arguments,
else from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, else from
JAX's cluster auto-detection (TPU pods, SLURM, ...) when ``auto`` is set.
"""

from __future__ import annotations

import os

import jax


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_cpu_devices: int | None = None,
    auto: bool = False,
) -> None:
    """Joins the job's processes; a single-process run (nothing given, ``auto`` off) is a no-op.

    ``local_cpu_devices`` fakes that many CPU devices per process (tests and CPU clusters).
    """
    if local_cpu_devices:
        jax.config.update("jax_num_cpu_devices", local_cpu_devices)
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes or _env_int("JAX_NUM_PROCESSES")
    process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
    if coordinator is None and num_processes is None and not auto:
        return
    if coordinator is not None and (num_processes is None or process_id is None):
        raise ValueError(
            f"a coordinator ({coordinator}) needs the number of processes and this process's id: "
            "pass both, or set JAX_NUM_PROCESSES and JAX_PROCESS_ID"
        )
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value in (None, "") else int(value)
