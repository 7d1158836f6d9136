"""`inventory migrate`: bring the Postgres schema up to date.

    inventory migrate [--database-url URL]

The URL defaults to ``$INVENTORY_DATABASE_URL``. Prints each migration it applied, or that
there was nothing to apply. Safe to run twice, and from several machines at once (the
runs take turns). Exit status: 0 on success; 1 when Postgres cannot be reached, the URL is
invalid, or a migration is refused or fails (the reason on stderr); 2 for command-line
errors, such as no URL at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from asyncpg import exceptions as pg_errors  # type: ignore[import-untyped]

from inventory.ops.redact import redact
from inventory.record.errors import DatabaseUnavailableError, MigrationError
from inventory.record.migrate import migrate_database

_PROG = "inventory migrate"
ENV_DATABASE_URL = "INVENTORY_DATABASE_URL"


def register(subparsers: Any) -> None:
    """Add the ``migrate`` command."""
    parser = subparsers.add_parser(
        "migrate",
        help="apply pending Postgres schema migrations",
        description="Apply the pending schema migrations, each in its own transaction.",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"postgresql:// URL of the database (default: ${ENV_DATABASE_URL})",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="give up connecting after this long (default: 10)",
    )
    parser.set_defaults(handler=run)


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """Apply the pending migrations; return the exit status."""
    url = args.database_url or os.environ.get(ENV_DATABASE_URL, "")
    if not url:
        print(
            f"{_PROG}: no database: pass --database-url or set {ENV_DATABASE_URL}",
            file=sys.stderr,
        )
        return 2
    try:
        applied = asyncio.run(migrate_database(url, connect_timeout_s=args.connect_timeout))
    except DatabaseUnavailableError as error:
        return _fail(f"cannot reach the database at {redact(url)}: {error.detail}")
    except MigrationError as error:
        return _fail(error.detail)
    except (pg_errors.ClientConfigurationError, ValueError, OverflowError) as error:
        return _fail(f"invalid database URL {redact(url)}: {error}")
    if not applied:
        print(f"schema is up to date at {redact(url)}; nothing to apply")
    for migration in applied:
        print(f"applied {migration.filename}")
    return 0
