"""inventory.privacy.crypto: field encryption bound to its place, key rotation, the blind index."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.privacy.crypto import (
    BlindIndex,
    EncryptedField,
    FieldCryptoError,
    FieldDecryptionError,
    FieldKeyring,
    KeyConfigError,
    MalformedFieldError,
    UnknownKeyError,
)

PLACE = {
    "table": "patients",
    "column": "resident_id",
    "row_id": "7f1c0c2e-0000-4000-8000-000000000001",
}
SECRET = "11010519491231002X"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _spec(**keys: bytes) -> str:
    return ",".join(f"{key_id}:{_b64(key)}" for key_id, key in keys.items())


# --- encryption -----------------------------------------------------------------------------


@settings(deadline=None)
@given(st.text(max_size=200), st.text(min_size=1, max_size=40))
def test_round_trip(plaintext: str, row_id: str) -> None:
    """Any text decrypts back to itself at the place it was encrypted for."""
    ring = FieldKeyring.generate()
    field = ring.encrypt(plaintext, table="patients", column="name", row_id=row_id)
    assert ring.decrypt(field.blob, table="patients", column="name", row_id=row_id) == plaintext


def test_stored_layout_and_fresh_nonces() -> None:
    """The blob is version|len|key id|nonce|ciphertext+tag; equal plaintexts differ."""
    ring = FieldKeyring.generate(["k2026a"])
    one = ring.encrypt(SECRET, **PLACE)
    two = ring.encrypt(SECRET, **PLACE)
    assert one.key_id == "k2026a"
    assert one.blob[:8] == b"\x01\x06k2026a"
    assert len(one.blob) == 2 + 6 + 12 + len(SECRET) + 16
    assert one.blob[8:20] != two.blob[8:20]  # a new random nonce every time
    assert SECRET.encode() not in one.blob


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"row_id": "7f1c0c2e-0000-4000-8000-000000000002"},
        {"column": "mobile"},
        {"table": "accounts"},
        # Same concatenation, different split: length prefixes keep these apart.
        {"table": "patientsr", "column": "esident_id"},
    ],
)
def test_ciphertext_does_not_decrypt_in_another_place(elsewhere: dict[str, str]) -> None:
    """A blob moved to another row, column or table fails authentication."""
    ring = FieldKeyring.generate()
    blob = ring.encrypt(SECRET, **PLACE).blob
    with pytest.raises(FieldDecryptionError) as excinfo:
        ring.decrypt(blob, **{**PLACE, **elsewhere})
    assert SECRET not in str(excinfo.value)


@settings(deadline=None, max_examples=50)
@given(st.data())
def test_any_flipped_bit_fails(data: st.DataObject) -> None:
    """Flipping any bit of a blob makes decryption fail with a typed error, never garbage."""
    ring = FieldKeyring.generate(["k1"])
    blob = bytearray(ring.encrypt(SECRET, **PLACE).blob)
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(FieldCryptoError):
        ring.decrypt(bytes(blob), **PLACE)


def test_flipped_ciphertext_byte_is_a_decryption_error() -> None:
    """A changed ciphertext or tag byte is FieldDecryptionError specifically."""
    ring = FieldKeyring.generate()
    blob = bytearray(ring.encrypt(SECRET, **PLACE).blob)
    for index in (len(blob) - 1, len(blob) - 17, 2 + len("test") + 3):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(FieldDecryptionError):
            ring.decrypt(bytes(tampered), **PLACE)


def test_relabelled_key_id_fails() -> None:
    """Rewriting the key id in the header to another live key fails: the header is AAD."""
    ring = FieldKeyring({"k1": os.urandom(32), "k2": os.urandom(32)}, current="k1")
    blob = ring.encrypt(SECRET, **PLACE).blob
    with pytest.raises(FieldDecryptionError):
        ring.decrypt(blob.replace(b"k1", b"k2", 1), **PLACE)


def test_unknown_key_id_is_a_typed_error() -> None:
    """A blob under a key the keyring does not hold raises UnknownKeyError naming it."""
    old = FieldKeyring.generate(["k2025b"])
    new = FieldKeyring.generate(["k2026a"])
    blob = old.encrypt(SECRET, **PLACE).blob
    with pytest.raises(UnknownKeyError) as excinfo:
        new.decrypt(blob, **PLACE)
    assert excinfo.value.key_id == "k2025b"
    assert excinfo.value.code == "field_key_unknown"


def test_same_key_id_with_other_material_fails() -> None:
    """A blob read with a different key under the same id fails authentication."""
    blob = FieldKeyring.generate(["k1"]).encrypt(SECRET, **PLACE).blob
    with pytest.raises(FieldDecryptionError):
        FieldKeyring.generate(["k1"]).decrypt(blob, **PLACE)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01",
        b"\x02\x02k1" + bytes(40),
        b"\x01\x02k1" + bytes(27),
        b"\x01\x02\xff\xfe" + bytes(40),
    ],
)
def test_malformed_blobs_are_refused(blob: bytes) -> None:
    """Truncated blobs, unknown versions and non-ASCII key ids raise MalformedFieldError."""
    ring = FieldKeyring.generate(["k1"])
    with pytest.raises(MalformedFieldError):
        ring.decrypt(blob, **PLACE)
    with pytest.raises(MalformedFieldError):
        ring.needs_reencryption(blob)


def test_place_must_be_named() -> None:
    """Empty table, column or row id is refused: a ciphertext must be bound to somewhere."""
    ring = FieldKeyring.generate()
    with pytest.raises(ValueError, match="row_id"):
        ring.encrypt(SECRET, table="patients", column="name", row_id="")


# --- rotation -------------------------------------------------------------------------------


def test_two_live_keys_old_blobs_decrypt_and_are_marked_for_reencryption() -> None:
    """After rotation old blobs still decrypt, need re-encryption, and reencrypt moves them."""
    old_key, new_key = os.urandom(32), os.urandom(32)
    before = FieldKeyring({"k2025b": old_key}, current="k2025b")
    old_blob = before.encrypt(SECRET, **PLACE).blob

    after = FieldKeyring({"k2025b": old_key, "k2026a": new_key}, current="k2026a")
    new_field = after.encrypt(SECRET, **PLACE)
    assert new_field.key_id == "k2026a"
    assert after.decrypt(old_blob, **PLACE) == SECRET
    assert after.needs_reencryption(old_blob)
    assert not after.needs_reencryption(new_field.blob)
    assert after.key_id_of(old_blob) == "k2025b"

    moved = after.reencrypt(old_blob, **PLACE)
    assert moved.key_id == "k2026a"
    assert not after.needs_reencryption(moved.blob)
    assert after.decrypt(moved.blob, **PLACE) == SECRET
    # Once nothing is left under the old key it can be retired.
    retired = FieldKeyring({"k2026a": new_key}, current="k2026a")
    assert retired.decrypt(moved.blob, **PLACE) == SECRET


# --- configuration and secrecy ----------------------------------------------------------------


def test_from_config_parses_ids_and_keys() -> None:
    """A spec of id:base64 entries (spaces allowed) builds a keyring that decrypts both."""
    key_a, key_b = os.urandom(32), os.urandom(32)
    ring = FieldKeyring.from_config(f" k2026a:{_b64(key_a)} , k2025b:{_b64(key_b)} ", "k2026a")
    assert ring.current == "k2026a"
    assert ring.key_ids == ("k2025b", "k2026a")
    old = FieldKeyring({"k2025b": key_b}, current="k2025b").encrypt(SECRET, **PLACE)
    assert ring.decrypt(old.blob, **PLACE) == SECRET


@pytest.mark.parametrize(
    ("spec", "current", "message"),
    [
        ("", "k1", "empty"),
        ("k1", "k1", "of the form"),
        (f"k1:{_b64(b'x' * 16)}", "k1", "16 bytes"),
        (f"k1:{_b64(b'x' * 33)}", "k1", "33 bytes"),
        ("k1:not base64!!", "k1", "not valid base64"),
        (f"k1:{_b64(b'a' * 32)},k1:{_b64(b'b' * 32)}", "k1", "more than once"),
        (f"k1:{_b64(b'a' * 32)},k2:{_b64(b'a' * 32)}", "k1", "same key material"),
        (f"k:1:{_b64(b'a' * 32)}", "k", "not valid base64"),
        (f"bad id:{_b64(b'a' * 32)}", "bad id", "key id"),
        (f"k1:{_b64(b'a' * 32)}", "k2", "current key id"),
        (f"k1:{_b64(b'a' * 32)},", "k1", "of the form"),
    ],
)
def test_config_errors_are_clear_and_hold_no_key_material(
    spec: str, current: str, message: str
) -> None:
    """Bad lengths, duplicates, bad base64/ids and a missing current key are KeyConfigError."""
    with pytest.raises(KeyConfigError, match=message) as excinfo:
        FieldKeyring.from_config(spec, current)
    rendered = "".join(traceback.format_exception(excinfo.value))
    for entry in spec.split(","):
        encoded = entry.partition(":")[2]
        if len(encoded) > 4:
            assert encoded not in rendered
    assert isinstance(excinfo.value, ValueError)


def test_key_material_never_appears_in_repr_or_str() -> None:
    """repr/str of keyrings, blobs, indexes and errors show ids and sizes, never keys."""
    key, index_key = os.urandom(32), os.urandom(32)
    ring = FieldKeyring({"k2026a": key}, current="k2026a")
    index = BlindIndex(index_key, key_id="bi2026a")
    field = ring.encrypt(SECRET, **PLACE)
    rendered = " ".join([repr(ring), str(ring), repr(index), str(index), repr(field), str(field)])
    for secret in (key, index_key):
        assert _b64(secret) not in rendered
        assert secret.hex() not in rendered
        assert repr(secret) not in rendered
    assert "k2026a" in repr(ring)
    assert "bi2026a" in repr(index)
    assert repr(field) == f"EncryptedField(key_id='k2026a', blob=<{len(field.blob)} bytes>)"


def test_keyring_keeps_no_raw_key_bytes() -> None:
    """No attribute of the keyring is the key itself, so introspection cannot print it."""
    key = os.urandom(32)
    ring = FieldKeyring({"k1": key}, current="k1")
    reachable = [getattr(ring, name) for name in FieldKeyring.__slots__]
    assert all(key not in (value if isinstance(value, bytes) else b"") for value in reachable)
    assert all(key not in (v if isinstance(v, bytes) else b"") for v in reachable[0].values())


def test_constructor_refuses_bad_keys() -> None:
    """Wrong key length or type, and an empty keyring, are KeyConfigError."""
    with pytest.raises(KeyConfigError, match="31 bytes"):
        FieldKeyring({"k1": os.urandom(31)}, current="k1")
    with pytest.raises(KeyConfigError, match="must be bytes"):
        FieldKeyring({"k1": "0" * 32}, current="k1")  # type: ignore[dict-item]
    with pytest.raises(KeyConfigError, match="at least one"):
        FieldKeyring({}, current="k1")


# --- blind index --------------------------------------------------------------------------


def test_blind_index_is_deterministic_per_key_and_differs_between_keys() -> None:
    """Same key, same value -> same digest; another key or value -> another digest."""
    key = os.urandom(32)
    one, same = BlindIndex(key, key_id="bi1"), BlindIndex(key, key_id="bi1")
    other = BlindIndex(os.urandom(32), key_id="bi2")
    digest = one.digest(SECRET)
    assert digest == same.digest(SECRET)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest != other.digest(SECRET)
    assert digest != one.digest("11010519491231003X")
    assert SECRET not in digest


def test_blind_index_is_hmac_sha256() -> None:
    """The digest is keyed HMAC-SHA256 of the UTF-8 value, not a plain hash."""
    key = bytes(range(32))
    expected = hmac.new(key, SECRET.encode(), hashlib.sha256).hexdigest()
    assert BlindIndex(key, key_id="bi1").digest(SECRET) == expected
    assert expected != hashlib.sha256(SECRET.encode()).hexdigest()


def test_blind_index_config() -> None:
    """One id:base64 entry builds the index; more than one, or a short key, is refused."""
    key = os.urandom(32)
    index = BlindIndex.from_config(f"bi2026a:{_b64(key)}")
    assert index.key_id == "bi2026a"
    assert index.digest(SECRET) == BlindIndex(key, key_id="bi2026a").digest(SECRET)
    with pytest.raises(KeyConfigError, match="exactly one"):
        BlindIndex.from_config(_spec(a=os.urandom(32), b=os.urandom(32)))
    with pytest.raises(KeyConfigError, match="16 bytes"):
        BlindIndex(os.urandom(16), key_id="bi1")


def test_encrypted_field_is_a_value() -> None:
    """EncryptedField compares by value and is immutable."""
    field = EncryptedField("k1", b"\x01")
    assert field == EncryptedField("k1", b"\x01")
    with pytest.raises(AttributeError):
        field.key_id = "k2"  # type: ignore[misc]
