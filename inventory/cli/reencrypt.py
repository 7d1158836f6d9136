"""`inventory reencrypt`: move every patient row, and every account's phone, to the current
field-encryption key.

    inventory reencrypt [--batch N]

Reads ``INVENTORY_DATABASE_URL``, ``INVENTORY_FIELD_KEYS`` and
``INVENTORY_FIELD_CURRENT_KEY`` (every key still named by a row must be listed). Prints the
counts and the rows per key id, for patients, then accounts. Exit status: 0 when every row
is on the current key; 1 when some rows could not be decrypted (how many, by error code and
missing key id, never their contents) or Postgres failed; 2 for configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from inventory.cli.arguments import positive_int
from inventory.ops.config import Settings

_PROG = "inventory reencrypt"


def register(subparsers: Any) -> None:
    """Add the ``reencrypt`` command."""
    parser = subparsers.add_parser(
        "reencrypt",
        help="re-encrypt patients' and accounts' personal data under the current field key "
        "(key rotation)",
    )
    parser.add_argument(
        "--batch", type=positive_int, default=500, metavar="N", help="rows per transaction (500)"
    )
    parser.set_defaults(handler=run_reencrypt)


async def _reencrypt(settings: Settings, keyring: Any, batch: int) -> list[tuple[str, Any]]:
    from inventory.record.pool import create_pool
    from inventory.record.reencrypt import reencrypt_accounts, reencrypt_patients

    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        return [
            ("patients", await reencrypt_patients(pool, keyring, batch=batch)),
            ("accounts", await reencrypt_accounts(pool, keyring, batch=batch)),
        ]
    finally:
        await pool.close()


def run_reencrypt(args: argparse.Namespace) -> int:
    """Re-encrypt and print the counts; exit 1 if any row could not be decrypted."""
    from inventory.errors import InventoryError

    settings = Settings.from_env(for_api=False)
    try:
        keyring = settings.keyring()
    except ValueError as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 2
    try:
        reports = asyncio.run(_reencrypt(settings, keyring, args.batch))
    except (InventoryError, OSError) as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 1
    status = 0
    for table, report in reports:
        print(
            f"{table}: current key {report.current_key}: {report.moved} rows moved, "
            f"{report.already_current} already current, {report.failed} failed"
        )
        per_key = ", ".join(f"{key}={n}" for key, n in sorted(report.rows_per_key.items()))
        print(f"{table}: rows per key: {per_key or 'none'}")
        if report.failed:
            status = 1
            codes = ", ".join(f"{code}={n}" for code, n in sorted(report.failures_by_code.items()))
            print(
                f"{_PROG}: {table}: {report.failed} rows could not be decrypted ({codes})",
                file=sys.stderr,
            )
            for key_id, count in sorted(report.missing_keys.items()):
                print(
                    f"  {count} rows are under key {key_id!r}, which is not configured",
                    file=sys.stderr,
                )
    return status
