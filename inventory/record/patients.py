"""Real-name patients (就诊人): validated at the edge, encrypted at rest, one patient per
resident ID number whichever account registers it.

Personal data (name, phone, ID number) is encrypted field by field with AES-GCM bound to
its table, column and row; the ID number is found again through a keyed blind index;
nothing else stores it. Accounts see their patients masked.
"""

from __future__ import annotations

import random
import secrets
import time
from datetime import date
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.exceptions
import structlog

from inventory.domain import Gender, PatientDetails, Relation
from inventory.errors import ConflictError, ValidationFailedError
from inventory.privacy.crypto import BlindIndex, FieldKeyring
from inventory.privacy.identity import (
    IdentityError,
    canonical_mobile,
    canonical_name,
    canonical_resident_id,
    check_patient_consistency,
    mask_mobile,
    mask_name,
    mask_resident_id,
)
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.connection import RedisClient

log = structlog.get_logger(__name__)

TABLE = "patients"
#: How long a confirmed account-patient link is trusted without asking Postgres again,
#: on average: each entry lives a random 75-125 % of it, so links confirmed together (a
#: release's crowd) are not all asked again in the same second a minute later.
LINK_CACHE_S = 60.0


class PatientIdentityMismatchError(ConflictError):
    code = "patient_identity_mismatch"
    title = "This ID number is registered with different personal details"


def _invalid(error: IdentityError) -> ValidationFailedError:
    return ValidationFailedError(
        errors=[{"field": error.field, "reason": error.message, "code": error.code}]
    )


def patient_view(
    *,
    patient_id: str,
    name: str,
    gender: str,
    birth_date: date,
    phone: str,
    resident_id: str,
    relation: str,
) -> dict[str, Any]:
    """A patient as an account sees it (the API's ``PatientView`` JSON), from fields
    already masked. An unknown gender or relation raises ValueError, as the model's
    validation did: the table's checks keep them out."""
    return {
        "patient_id": patient_id,
        "name": name,
        "gender": Gender(gender).value,
        "birth_date": birth_date.isoformat(),
        "phone": phone,
        "resident_id": resident_id,
        "relation": Relation(relation).value,
    }


class PatientRegistry:
    """Patients in Postgres, with their personal data encrypted."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: FieldKeyring,
        index: BlindIndex,
        *,
        acquire_timeout_s: float = 5.0,
        link_cache_s: float = LINK_CACHE_S,
        redis: RedisClient | None = None,
    ) -> None:
        """``redis`` (a redis-py asyncio client) keeps a copy of every link under the
        patient's tag, read before Postgres is asked (None: Postgres only)."""
        self._pool = pool
        self._redis = redis
        self._keyring = keyring
        self._index = index
        self._timeout = acquire_timeout_s
        self._link_cache_s = link_cache_s
        self._links: dict[tuple[str, str], float] = {}

    def _encrypt(self, value: str, column: str, row_id: str) -> bytes:
        return self._keyring.encrypt(value, table=TABLE, column=column, row_id=row_id).blob

    def _decrypt(self, row: asyncpg.Record, column: str) -> str:
        return self._keyring.decrypt(
            row[column + "_enc"], table=TABLE, column=column, row_id=row["id"]
        )

    def _view(self, row: asyncpg.Record, relation: str) -> dict[str, Any]:
        return patient_view(
            patient_id=row["id"],
            name=mask_name(self._decrypt(row, "name")),
            gender=row["gender"],
            birth_date=row["birth_date"],
            phone=mask_mobile(self._decrypt(row, "phone")),
            resident_id=mask_resident_id(self._decrypt(row, "resident_id")),
            relation=relation,
        )

    def contact(self, patient_id: str, name_enc: bytes, phone_enc: bytes | None) -> tuple[str, str]:
        """A patient's name and phone in clear, from their columns: for the operators'
        desk to mask, or to match a phone against (never answered as they are)."""
        fields = {"id": patient_id, "name_enc": name_enc, "phone_enc": phone_enc}
        phone = self._decrypt(fields, "phone") if phone_enc is not None else ""
        return self._decrypt(fields, "name"), phone

    async def register(self, account_id: str, body: PatientDetails) -> tuple[dict[str, Any], bool]:
        """Register (or link) a patient for the account; (view, newly linked)."""
        try:
            resident_id = canonical_resident_id(body.resident_id)
            check_patient_consistency(resident_id, body.birth_date, body.gender.value)
            phone = canonical_mobile(body.phone, field="phone")
            name = canonical_name(body.name)
        except IdentityError as error:
            raise _invalid(error) from None
        # The column holds the 32 raw bytes of the HMAC (half the size of its hex form).
        blind = bytes.fromhex(self._index.digest(resident_id))
        patient_id = "p" + secrets.token_hex(12)
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(
                QUERIES["insert_patient"],
                patient_id,
                account_id,
                blind,
                self._keyring.current,
                self._encrypt(name, "name", patient_id),
                self._encrypt(phone, "phone", patient_id),
                self._encrypt(resident_id, "resident_id", patient_id),
                body.gender.value,
                body.birth_date,
            )
            if row is None:
                row = await connection.fetchrow(QUERIES["get_patient_by_blind_index"], blind)
                # The same ID number with another name is not the same person's record:
                # refuse rather than let an account attach itself to a stranger.
                if row is None or self._decrypt(row, "name") != name:
                    raise PatientIdentityMismatchError()
            linked = await connection.fetchrow(
                QUERIES["link_account_patient"], account_id, row["id"], body.relation.value
            )
            relation = body.relation.value
            if linked is None:
                existing = await connection.fetchrow(
                    QUERIES["get_account_patient"], account_id, row["id"]
                )
                relation = existing["relation"] if existing is not None else relation
        # After the commit: Redis holds a copy of committed links only.
        await self._copy_link(str(row["id"]), account_id)
        return self._view(row, relation), linked is not None

    async def list_for_account(self, account_id: str) -> list[dict[str, Any]]:
        """The account's patients, masked."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["list_account_patients"], account_id)
        return [self._view(row, row["relation"]) for row in rows]

    def known_link(self, patient_id: str, account_id: str) -> bool:
        """Does this process remember (still) that this account may book for this
        patient? (no I/O; False only means "ask :meth:`belongs_to`")"""
        return self._links.get((account_id, patient_id), 0.0) > time.monotonic()

    async def belongs_to(self, patient_id: str, account_id: str) -> bool:
        """May this account book for this patient? (positive answers cached briefly)

        Asks, in turn: this process's memory, the link's copy in Redis, Postgres (the
        source of truth; a link found there is copied to Redis). So a reserve needs
        Postgres only for a link made before copies existed, or lost with Redis's data.
        """
        now = time.monotonic()
        if self._links.get((account_id, patient_id), 0.0) > now:
            return True
        linked = await self._linked_in_redis(patient_id, account_id)
        if not linked:
            async with acquire(self._pool, timeout_s=self._timeout) as connection:
                linked = bool(
                    await connection.fetchval(
                        QUERIES["account_has_patient"], account_id, patient_id
                    )
                )
            if linked:
                await self._copy_link(patient_id, account_id)
        if linked:
            if len(self._links) > 100_000:
                self._links.clear()
            lifetime = self._link_cache_s * random.uniform(0.75, 1.25)
            self._links[(account_id, patient_id)] = now + lifetime
        return linked

    async def _linked_in_redis(self, patient_id: str, account_id: str) -> bool:
        """The link's copy in Redis (False when absent, or Redis cannot answer: then
        Postgres decides)."""
        if self._redis is None:
            return False
        try:
            found = await self._redis.hexists(keys.patient_accounts_key(patient_id), account_id)
        except (redis.exceptions.RedisError, OSError) as error:
            log.warning("patients.link_read_failed", error=f"{type(error).__name__}: {error}")
            return False
        return bool(found)

    async def _copy_link(self, patient_id: str, account_id: str) -> None:
        """Copy a committed link to Redis; a failure is logged, and repaired the next
        time Postgres confirms the link."""
        if self._redis is None:
            return
        try:
            await self._redis.hset(keys.patient_accounts_key(patient_id), account_id, "1")
        except (redis.exceptions.RedisError, OSError) as error:
            log.warning("patients.link_copy_failed", error=f"{type(error).__name__}: {error}")
