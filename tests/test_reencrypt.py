"""Key rotation of personal data (patients' fields, accounts' phones): `inventory
reencrypt` against a real Postgres."""

from __future__ import annotations

import asyncio
import base64
import os
from datetime import date

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import pytest

from inventory.api.models import Gender, PatientCreate
from inventory.cli import main
from inventory.privacy.crypto import BlindIndex, FieldKeyring
from inventory.privacy.identity import make_resident_id
from inventory.record import accounts
from inventory.record.accounts import AccountRecord
from inventory.record.patients import TABLE, PatientRegistry
from inventory.record.pool import create_pool
from inventory.record.reencrypt import reencrypt_accounts, reencrypt_patients

K1 = os.urandom(32)
K2 = os.urandom(32)
K0 = os.urandom(32)  # a key that is retired before its rows were moved
INDEX = BlindIndex.generate()


def people(count: int, *, seq: int = 0) -> list[dict[str, str]]:
    """Canonical personal data for ``count`` distinct patients."""
    return [
        {
            "name": f"张{'三四五六七八九十'[i % 8]}",
            "phone": f"1380013{i + seq:04d}",
            "resident_id": make_resident_id(date(1990, 1, 1 + i % 28), "male", seq=seq + i),
        }
        for i in range(count)
    ]


async def register(pool: asyncpg.Pool, keyring: FieldKeyring, who: list[dict[str, str]]) -> None:
    """Register each person through the API's registry with this keyring."""
    registry = PatientRegistry(pool, keyring, INDEX)
    for n, person in enumerate(who):
        body = PatientCreate(
            name=person["name"],
            gender=Gender.MALE,
            birth_date=date(int(person["resident_id"][6:10]), 1, int(person["resident_id"][12:14])),
            phone=person["phone"],
            resident_id=person["resident_id"],
        )
        await registry.register(f"acct-{n}", body)


async def decrypted(pool: asyncpg.Pool, keyring: FieldKeyring) -> dict[str, tuple[str, ...]]:
    """Every patient's fields decrypted with ``keyring``, by ID number."""
    found: dict[str, tuple[str, ...]] = {}
    async with pool.acquire() as connection:
        rows = await connection.fetch("SELECT * FROM patients")
    for row in rows:
        values = tuple(
            keyring.decrypt(row[c + "_enc"], table=TABLE, column=c, row_id=row["id"])
            for c in ("name", "phone", "resident_id")
        )
        assert keyring.key_id_of(row["name_enc"]) == row["key_id"]
        found[values[2]] = values
    return found


async def test_rotation_moves_every_row_so_the_old_key_can_be_retired(pool: asyncpg.Pool) -> None:
    """Rows under k1 all move to k2, decrypt with k2 alone, and a second run moves none."""
    who = people(7)
    await register(pool, FieldKeyring({"k1": K1}, "k1"), who)
    rotating = FieldKeyring({"k1": K1, "k2": K2}, "k2")

    report = await reencrypt_patients(pool, rotating, batch=3)
    assert (report.moved, report.already_current, report.failed) == (7, 0, 0)
    assert report.rows_per_key == {"k2": 7}
    assert report.ok

    only_k2 = FieldKeyring({"k2": K2}, "k2")
    assert await decrypted(pool, only_k2) == {
        p["resident_id"]: (p["name"], p["phone"], p["resident_id"]) for p in who
    }

    again = await reencrypt_patients(pool, rotating, batch=3)
    assert (again.moved, again.already_current, again.failed) == (0, 7, 0)


async def test_a_row_whose_key_is_gone_is_a_failure_and_is_left_alone(pool: asyncpg.Pool) -> None:
    """A row under an unconfigured key is counted by key id, unchanged, and nothing leaks."""
    lost = people(1, seq=100)
    await register(pool, FieldKeyring({"k0": K0}, "k0"), lost)
    await register(pool, FieldKeyring({"k1": K1}, "k1"), people(2))
    async with pool.acquire() as connection:
        before = await connection.fetchrow("SELECT * FROM patients WHERE key_id = 'k0'")

    report = await reencrypt_patients(pool, FieldKeyring({"k1": K1, "k2": K2}, "k2"), batch=1)
    assert (report.moved, report.failed) == (2, 1)
    assert report.failures_by_code == {"field_key_unknown": 1}
    assert report.missing_keys == {"k0": 1}
    assert report.rows_per_key == {"k0": 1, "k2": 2}
    assert not report.ok
    for secret in lost[0].values():
        assert secret not in repr(report)
    async with pool.acquire() as connection:
        after = await connection.fetchrow("SELECT * FROM patients WHERE key_id = 'k0'")
    assert dict(after) == dict(before)


def test_cli_prints_counts_and_exits_1_naming_how_many_rows_failed(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inventory reencrypt` prints the counts; a row under a missing key makes it exit 1."""
    url = database
    lost = people(1, seq=200)

    async def seed() -> None:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await register(pool, FieldKeyring({"k0": K0}, "k0"), lost)
            await register(pool, FieldKeyring({"k1": K1}, "k1"), people(3))
        finally:
            await pool.close()

    asyncio.run(seed())
    keys = f"k1:{base64.b64encode(K1).decode()},k2:{base64.b64encode(K2).decode()}"
    monkeypatch.setenv("INVENTORY_DATABASE_URL", url)
    monkeypatch.setenv("INVENTORY_FIELD_KEYS", keys)
    monkeypatch.setenv("INVENTORY_FIELD_CURRENT_KEY", "k2")

    assert main(["reencrypt", "--batch", "2"]) == 1
    out, err = capsys.readouterr()
    assert "patients: current key k2: 3 rows moved, 0 already current, 1 failed" in out
    assert "patients: rows per key: k0=1, k2=3" in out
    assert "accounts: current key k2: 0 rows moved, 0 already current, 0 failed" in out
    assert "1 rows could not be decrypted" in err
    assert "'k0'" in err
    for secret in lost[0].values():
        assert secret not in out + err


async def test_accounts_phones_move_to_the_new_key(pool: asyncpg.Pool) -> None:
    """Accounts' phones under k1 move to k2 and decrypt with k2 alone; accounts without a
    phone (WeChat logins) are not counted; a second run moves none."""
    phones = [f"1390013{i:04d}" for i in range(5)]
    old = AccountRecord(pool, FieldKeyring({"k1": K1}, "k1"), INDEX)
    ids = [await old.phone_account(phone) for phone in phones]
    await old.wechat_account("o-reencrypt-test", None)
    rotating = FieldKeyring({"k1": K1, "k2": K2}, "k2")

    report = await reencrypt_accounts(pool, rotating, batch=2)
    assert (report.moved, report.already_current, report.failed) == (5, 0, 0)
    assert report.rows_per_key == {"k2": 5}
    only_k2 = FieldKeyring({"k2": K2}, "k2")
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT id, key_id, phone_enc FROM accounts WHERE id = ANY($1::text[])", ids
        )
    assert {
        only_k2.decrypt(row["phone_enc"], table=accounts.TABLE, column="phone", row_id=row["id"])
        for row in rows
    } == set(phones)
    again = await reencrypt_accounts(pool, rotating, batch=2)
    assert (again.moved, again.already_current) == (0, 5)
