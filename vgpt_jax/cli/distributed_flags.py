"""Flags that join a multi-host job, shared by the training commands."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join the multi-host job JAX's cluster detection finds (SLURM, TPU pods, ...)",
    )
    group.add_argument("--coordinator-address", help="host:port of process 0 (else JAX_COORDINATOR_ADDRESS)")
    group.add_argument("--num-processes", type=int, help="processes in the job (else JAX_NUM_PROCESSES)")
    group.add_argument("--process-id", type=int, help="this process's id (else JAX_PROCESS_ID)")


def initialize(args: argparse.Namespace) -> None:
    """Joins the job the flags (or JAX_* variables) describe; a single process does nothing."""
    from vgpt_jax.parallel import distributed

    distributed.initialize(
        args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed
    )
