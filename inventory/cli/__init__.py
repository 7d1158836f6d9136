"""The one command line: `inventory <command> ...`.

Each command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``(argparse.Namespace) -> int`` returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from inventory.cli import envfile
from inventory.cli.envfile import ENV_FILE_VARIABLE

#: Commands that write an environment file rather than read one (``dev --env-file``).
WRITES_ENV_FILE = frozenset({"dev"})

# One module per command; the order is the order of `inventory --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "inventory.cli.dev",
    "inventory.cli.serve",
    "inventory.cli.worker",
    "inventory.cli.his_sim",
    "inventory.cli.his_key",
    "inventory.cli.persist",
    "inventory.cli.durable",
    "inventory.cli.reconcile",
    "inventory.cli.migrate",
    "inventory.cli.reencrypt",
    "inventory.cli.token",
    "inventory.cli.staff",
    "inventory.cli.capacity",
    "inventory.cli.report",
    "inventory.cli.loadtest",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="inventory",
        description="slot-inventory: appointment-slot inventory for hospital booking.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for name, command in subparsers.choices.items():
        if name in WRITES_ENV_FILE:
            continue
        command.add_argument(
            "--env-file",
            metavar="PATH",
            help=f"read INVENTORY_* settings from this file first (e.g. the one `inventory dev` "
            f"writes; default ${ENV_FILE_VARIABLE}); its values win over the environment's",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return its exit status."""
    from inventory.cli.failures import OUTAGE_ERRORS, report
    from inventory.ops.config import ConfigError
    from inventory.store.connection import UnsupportedRedisError

    parser = build_parser()
    args = parser.parse_args(argv)
    env_file = None
    if args.command not in WRITES_ENV_FILE:
        env_file = getattr(args, "env_file", None) or os.environ.get(ENV_FILE_VARIABLE)
    if env_file:
        try:
            envfile.apply(env_file)
        except envfile.EnvFileError as error:
            print(f"inventory {args.command}: --env-file: {error}", file=sys.stderr)
            return 2
    try:
        status: int = args.handler(args)
    except ConfigError as error:
        # Every command reads its settings the same way and refuses bad ones so.
        print(f"inventory {args.command}: {error}", file=sys.stderr)
        return 2
    except UnsupportedRedisError as error:
        # Any command that reaches Redis refuses an old server the same way, at start-up.
        print(f"inventory {args.command}: {error}", file=sys.stderr)
        return 2
    except OUTAGE_ERRORS as error:
        # Redis or Postgres out of reach: one line and a non-zero exit, not a traceback.
        return report(args.command, error)
    return status
