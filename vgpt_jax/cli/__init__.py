"""The ``vgpt`` command: ``vgpt COMMAND --config experiments/X.py[:ARG] [--config.a.b=v ...] [flags]``.

Every job is one subcommand of one parser. A command module defines ``HELP`` (one line),
``CONFIG`` (``"required"``: an experiment file; ``"overrides"``: only ``--config.a.b=v`` fields,
applied to a checkpoint's own config; ``"none"``), ``add_arguments(parser)`` and
``main(args) -> int``. For ``"required"`` commands ``args.config`` is the experiment's config with
the overrides applied and validated here, once; ``args.config_overrides`` holds the raw
``FIELD=VALUE`` strings either way.

Errors a user can cause (a missing file, a bad field, a config that does not fit the data) print one
line, ``vgpt COMMAND: error: ...``, and exit 1; ``VGPT_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Sequence

# command -> module; modules import their heavy dependencies inside main(), so `vgpt --help` is fast
COMMANDS = {
    "info": "vgpt_jax.cli.info",
    "train": "vgpt_jax.cli.train",
    "train-tokenizer": "vgpt_jax.cli.train_tokenizer",
    "encode-latents": "vgpt_jax.cli.encode_latents",
    "sample": "vgpt_jax.cli.sample",
    "export": "vgpt_jax.cli.export",
    "convert": "vgpt_jax.cli.convert",
    "physics-iq": "vgpt_jax.cli.physics_iq",
    "generate-set": "vgpt_jax.cli.generate_set",
    "fvd": "vgpt_jax.cli.fvd",
    "predict-eval": "vgpt_jax.cli.predict_eval",
    "features": "vgpt_jax.cli.features",
    "probe": "vgpt_jax.cli.probe",
    "bench": "vgpt_jax.cli.bench",
    "demo": "vgpt_jax.cli.demo",
}

# exceptions that mean "the input is wrong", not "the code is wrong": one line, no traceback
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    TimeoutError,
    FloatingPointError,
)
CONFIG_PREFIX = "--config."


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(other arguments, ``FIELD=VALUE`` overrides) of ``--config.FIELD=VALUE`` / ``--config.FIELD VALUE``."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(CONFIG_PREFIX):
            field, sep, value = arg[len(CONFIG_PREFIX) :].partition("=")
            if not sep:
                if i + 1 == len(argv):
                    raise ValueError(f"{arg} needs a value: {arg}=VALUE")
                i, value = i + 1, argv[i + 1]
            overrides.append(f"{field}={value}")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {importlib.import_module(m).HELP}" for name, m in COMMANDS.items()]
    return (
        "usage: vgpt COMMAND --config experiments/X.py[:ARG] [--config.a.b=v ...] [flags]\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`vgpt COMMAND --help` lists a command's flags."
    )


def _parser(command: str, module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vgpt {command}", description=module.HELP)
    if module.CONFIG == "required":
        parser.add_argument(
            "--config",
            required=True,
            help="an experiment file, optionally with an argument: experiments/X.py[:ARG]; "
            "--config.a.b=VALUE overrides one field",
        )
    elif module.CONFIG == "overrides":
        parser.epilog = "--config.a.b=VALUE overrides one field of the checkpoint's own config."
    module.add_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """Runs ``vgpt`` with ``argv`` (without the program name); returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    command, argv = argv[0], list(argv[1:])
    if command not in COMMANDS:
        nearest = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {nearest[0]}?)" if nearest else ""
        print(f"vgpt: unknown command {command!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    try:
        rest, overrides = split_config_overrides(argv)
        if overrides and module.CONFIG == "none":
            raise ValueError(f"vgpt {command} takes no config: remove {CONFIG_PREFIX}{overrides[0]}")
        args = _parser(command, module).parse_args(rest)
        args.config_overrides = overrides
        if module.CONFIG == "required":
            from vgpt_jax import config as config_lib

            args.config = config_lib.validate(config_lib.load_experiment(args.config, overrides))
        return module.main(args) or 0
    except USER_ERRORS as error:
        if os.environ.get("VGPT_TRACEBACK"):
            raise
        print(f"vgpt {command}: error: {error}", file=sys.stderr)
        return 1


def run() -> None:
    """Console entry point."""
    sys.exit(main(sys.argv[1:]))
