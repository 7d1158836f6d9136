"""Key rotation for personal data: move every row to the current field key (patients'
names, phones and ID numbers; accounts' phones).

A rotation deploys a new current key with the old ones still configured, then runs
:func:`reencrypt_patients` (``inventory reencrypt``). It walks the patients whose ``key_id``
is not the current one in id order, a batch per transaction, locking each batch with
``FOR UPDATE SKIP LOCKED``; each row's name, phone and ID number are decrypted and encrypted
again under the current key for the same (table, column, row), and the row's ``key_id`` is
set to it. The blind index does not change (it has its own key).

Safe while the API runs: the API only inserts patients (under the current key) and reads
them, and any key the keyring holds decrypts. Idempotent: a second run finds nothing to move.
A row locked by another transaction, or inserted under the old key by an API process not yet
restarted with the new key, is left for the next run. A row that cannot be decrypted (its key
is no longer configured, or its bytes fail authentication) is left as it is and counted as a
failure; nothing about it but the error code and key id is logged or reported. The old key
may be retired once :attr:`ReencryptReport.rows_per_key` shows no row on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from inventory.privacy.crypto import FieldCryptoError, FieldKeyring, UnknownKeyError
from inventory.record import accounts, patients
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

__all__ = ["ReencryptReport", "reencrypt_accounts", "reencrypt_patients"]

log = structlog.get_logger(__name__)

#: The encrypted columns of ``patients`` (stored as ``<column>_enc``), as bound in the AAD.
COLUMNS: tuple[str, ...] = ("name", "phone", "resident_id")


@dataclass(frozen=True, slots=True)
class _Table:
    """A table with encrypted columns and the queries that move it to a new key."""

    name: str
    columns: tuple[str, ...]
    lock: str
    update: str
    count: str


_PATIENTS = _Table(
    patients.TABLE,
    COLUMNS,
    QUERIES["lock_patients_to_reencrypt"],
    QUERIES["update_patient_ciphertexts"],
    QUERIES["count_patients_by_key"],
)
_ACCOUNTS = _Table(
    accounts.TABLE,
    ("phone",),
    QUERIES["lock_accounts_to_reencrypt"],
    QUERIES["update_account_phone"],
    QUERIES["count_accounts_by_key"],
)


@dataclass(frozen=True, slots=True)
class ReencryptReport:
    """What a run did; counts and key ids only, never personal data."""

    current_key: str
    #: Rows moved to the current key by this run.
    moved: int
    #: Rows that were on the current key already when the run started.
    already_current: int
    #: Rows left as they were because they could not be decrypted.
    failed: int
    #: The failures by error code (``field_key_unknown``, ``field_decrypt_failed``, ...).
    failures_by_code: dict[str, int] = field(default_factory=dict)
    #: Failures whose key is not configured, by the key id their ciphertext names.
    missing_keys: dict[str, int] = field(default_factory=dict)
    #: Rows per key id after the run: a key can be retired when it is absent here.
    rows_per_key: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no row failed."""
        return self.failed == 0


async def _rows_per_key(pool: asyncpg.Pool, table: _Table) -> dict[str, int]:
    async with acquire(pool) as connection:
        rows = await connection.fetch(table.count)
    # The count is the second column (named after the table).
    return {row["key_id"]: int(row[1]) for row in rows}


def _reencrypted(keyring: FieldKeyring, table: _Table, row: asyncpg.Record) -> list[bytes | None]:
    """The row's ciphertexts under the current key (None stays None); FieldCryptoError."""
    blobs: list[bytes | None] = []
    for column in table.columns:
        blob = row[column + "_enc"]
        if blob is None:
            blobs.append(None)
            continue
        moved = keyring.reencrypt(bytes(blob), table=table.name, column=column, row_id=row["id"])
        blobs.append(moved.blob)
    return blobs


async def reencrypt_patients(
    pool: asyncpg.Pool, keyring: FieldKeyring, *, batch: int = 500
) -> ReencryptReport:
    """Move every patient row not on ``keyring.current`` to it, one transaction per batch."""
    return await _reencrypt(pool, keyring, _PATIENTS, batch=batch)


async def reencrypt_accounts(
    pool: asyncpg.Pool, keyring: FieldKeyring, *, batch: int = 500
) -> ReencryptReport:
    """Move every account's phone not on ``keyring.current`` to it, as for patients."""
    return await _reencrypt(pool, keyring, _ACCOUNTS, batch=batch)


async def _reencrypt(
    pool: asyncpg.Pool, keyring: FieldKeyring, table: _Table, *, batch: int
) -> ReencryptReport:
    if batch < 1:
        raise ValueError("batch must be at least 1")
    current = keyring.current
    already_current = (await _rows_per_key(pool, table)).get(current, 0)
    moved = 0
    failures: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    after_id = ""
    while True:
        async with acquire(pool) as connection, connection.transaction():
            rows = await connection.fetch(table.lock, current, after_id, batch)
            for row in rows:
                after_id = row["id"]
                try:
                    blobs = _reencrypted(keyring, table, row)
                except FieldCryptoError as error:
                    failures[error.code] += 1
                    if isinstance(error, UnknownKeyError):
                        missing[error.key_id] += 1
                    continue
                await connection.execute(table.update, row["id"], current, *blobs)
                moved += 1
        if rows:
            log.info(
                "reencrypt.batch",
                table=table.name,
                rows=len(rows),
                moved=moved,
                failed=failures.total(),
            )
        if len(rows) < batch:
            break
    report = ReencryptReport(
        current_key=current,
        moved=moved,
        already_current=already_current,
        failed=failures.total(),
        failures_by_code=dict(failures),
        missing_keys=dict(missing),
        rows_per_key=await _rows_per_key(pool, table),
    )
    if report.failed:
        log.warning(
            "reencrypt.failures",
            table=table.name,
            failed=report.failed,
            codes=report.failures_by_code,
            missing_keys=report.missing_keys,
        )
    log.info(
        "reencrypt.done", table=table.name, current_key=current, moved=moved, failed=report.failed
    )
    return report
