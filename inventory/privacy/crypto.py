"""Field-level encryption of personal data for Postgres, and the blind index for lookups.

Names, phone numbers and resident ID numbers are stored encrypted, one field at a time, with
AES-256-GCM (research/reliability.md §3.4). Each encryption draws a fresh random 96-bit
nonce. The stored value (``bytea``) is::

    version (1 byte, 0x01 = AES-256-GCM) | key_id_len (1) | key_id (ASCII) | nonce (12)
    | ciphertext + 16-byte tag

The associated data binds a ciphertext to its place, so a value copied into another row or
column, or relabelled with another key id, fails authentication instead of decrypting::

    b"slot-inventory/field" | header (version, key_id_len, key_id)
    | len(table) table | len(column) column | len(row_id) row_id   (lengths: 4 bytes, big end)

Length prefixes rather than a separator keep ``("a|b", "c")`` and ``("a", "b|c")`` apart.
``row_id`` is the row's primary key as text, so it must be known before the INSERT
(a client-generated UUID, not a serial).

Keys and rotation. A :class:`FieldKeyring` holds every live key by id and encrypts with the
``current`` one; a blob names its key, so old blobs keep decrypting. Rotation: deploy the new
key as current with the old ones still listed; a background job re-encrypts the rows for which
:meth:`FieldKeyring.needs_reencryption` is true (store the key id in its own column so the
count per key is a query and a metric); retire a key only when its count is 0. With random
nonces NIST SP 800-38D bounds a key to about 2**32 encryptions: rotate far below that.
The version byte leaves room for a per-deployment SM4-GCM suite (GB/T 39786) later.

Lookups ("one ID number = one patient") use a :class:`BlindIndex`: HMAC-SHA256 of the
canonical value under its own key. An unkeyed hash would be useless as protection: an ID
number has a region code, a birth date within ~55k days, a 3-digit order code and a check
character, so every plausible number can be hashed in minutes. The index key is separate from
the encryption keys so that either can leak or rotate without the other; rotating it is a
re-index (recompute every digest from the decrypted values), which is why digests are stored
with the index key id.

Key configuration is text, ``"k2026a:<base64 of 32 bytes>,k2025b:<base64>"``; a key can be
made with ``python -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())"``.
No repr, str or error message here ever contains key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "BlindIndex",
    "EncryptedField",
    "FieldCryptoError",
    "FieldDecryptionError",
    "FieldKeyring",
    "KeyConfigError",
    "MalformedFieldError",
    "UnknownKeyError",
]

FORMAT_VERSION_AES256GCM: Final = 1
KEY_LEN_BYTES: Final = 32
NONCE_LEN_BYTES: Final = 12
TAG_LEN_BYTES: Final = 16
# Key ids travel in blobs, config text and metric labels: short, ASCII, no ':' or ','.
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_AAD_DOMAIN: Final = b"slot-inventory/field"


class FieldCryptoError(Exception):
    """Base of the errors of this module; ``code`` is stable, messages hold no secrets."""

    code: ClassVar[str] = "field_crypto_error"


class KeyConfigError(FieldCryptoError, ValueError):
    """The key configuration is malformed: raised at start-up, never per request."""

    code = "field_key_config"


class MalformedFieldError(FieldCryptoError):
    """The stored value is not a blob this module wrote (truncated, unknown version)."""

    code = "field_blob_malformed"


class UnknownKeyError(FieldCryptoError):
    """The blob names a key id that is not in the keyring (retired too early, or foreign)."""

    code = "field_key_unknown"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no key {key_id!r} in the keyring")
        self.key_id = key_id


class FieldDecryptionError(FieldCryptoError):
    """Authentication failed: tampered bytes, or a blob read in another row, column or key."""

    code = "field_decrypt_failed"


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise KeyConfigError("a key id must be 1-64 characters of A-Z a-z 0-9 _ . -")


def _check_key(key_id: str, key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise KeyConfigError(f"key {key_id!r} must be bytes")
    if len(key) != KEY_LEN_BYTES:
        raise KeyConfigError(
            f"key {key_id!r} is {len(key)} bytes; AES-256 and the blind index need {KEY_LEN_BYTES}"
        )


def _parse_key_spec(spec: str) -> dict[str, bytes]:
    """``"id:<base64>,id2:<base64>"`` -> ``{id: key}``; errors name ids and positions only."""
    if not isinstance(spec, str) or not spec.strip():
        raise KeyConfigError("the key configuration is empty")
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        key_id, sep, encoded = entry.strip().partition(":")
        if not sep:
            raise KeyConfigError(f"key entry {position} is not of the form <key id>:<base64>")
        key_id = key_id.strip()
        _check_key_id(key_id)
        if key_id in keys:
            raise KeyConfigError(f"key id {key_id!r} appears more than once")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            # from None: the decoder's message may quote the offending text.
            raise KeyConfigError(f"key {key_id!r} is not valid base64") from None
        _check_key(key_id, key)
        keys[key_id] = key
    return keys


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


@dataclass(frozen=True, slots=True)
class EncryptedField:
    """A stored value: ``blob`` for the ``bytea`` column, ``key_id`` for its own column."""

    key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"EncryptedField(key_id={self.key_id!r}, blob=<{len(self.blob)} bytes>)"


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    key_id: str
    raw: bytes  # the header bytes exactly as stored, authenticated as AAD
    nonce: bytes
    sealed: bytes


def _parse_blob(blob: bytes) -> _Header:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise MalformedFieldError("an encrypted field must be bytes")
    blob = bytes(blob)  # asyncpg returns bytes; memoryview support costs nothing
    if len(blob) < 2:
        raise MalformedFieldError("encrypted field is truncated")
    version, key_id_len = blob[0], blob[1]
    if version != FORMAT_VERSION_AES256GCM:
        raise MalformedFieldError(f"unknown encrypted field version {version}")
    header_end = 2 + key_id_len
    if len(blob) < header_end + NONCE_LEN_BYTES + TAG_LEN_BYTES:
        raise MalformedFieldError("encrypted field is truncated")
    try:
        key_id = blob[2:header_end].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedFieldError("encrypted field has a non-ASCII key id") from None
    if not _KEY_ID_RE.fullmatch(key_id):
        raise MalformedFieldError("encrypted field has a malformed key id")
    return _Header(
        version=version,
        key_id=key_id,
        raw=blob[:header_end],
        nonce=blob[header_end : header_end + NONCE_LEN_BYTES],
        sealed=blob[header_end + NONCE_LEN_BYTES :],
    )


def _aad(header: bytes, table: str, column: str, row_id: str) -> bytes:
    for name, value in (("table", table), ("column", column), ("row_id", row_id)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str")
        if not value:
            # An empty place would bind the ciphertext to nothing in particular.
            raise ValueError(f"{name} must not be empty")
    return _AAD_DOMAIN + _length_prefixed(header, table.encode(), column.encode(), row_id.encode())


class FieldKeyring:
    """The live field-encryption keys by id; encrypts with ``current``, decrypts with any.

    Only AEAD objects are kept, never the raw key bytes, so nothing reachable from the
    keyring prints a key.
    """

    __slots__ = ("_ciphers", "_current")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if not keys:
            raise KeyConfigError("the keyring needs at least one key")
        seen: dict[bytes, str] = {}
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            _check_key(key_id, key)
            # One key under two ids would make a "rotation" that changes nothing.
            if bytes(key) in seen:
                raise KeyConfigError(
                    f"keys {seen[bytes(key)]!r} and {key_id!r} are the same key material"
                )
            seen[bytes(key)] = key_id
            ciphers[key_id] = AESGCM(bytes(key))
        if current not in ciphers:
            raise KeyConfigError(f"the current key id {current!r} is not among the keys")
        self._ciphers = ciphers
        self._current = current

    @classmethod
    def from_config(cls, spec: str, current: str) -> FieldKeyring:
        """Parse ``"k2026a:<base64 32 bytes>,k2025b:<base64>"``; :class:`KeyConfigError` if bad."""
        return cls(_parse_key_spec(spec), current)

    @classmethod
    def generate(
        cls, key_ids: Iterable[str] = ("test",), current: str | None = None
    ) -> FieldKeyring:
        """A keyring of fresh random keys, for tests; ``current`` defaults to the last id."""
        ids = list(key_ids)
        keys = {key_id: AESGCM.generate_key(bit_length=256) for key_id in ids}
        return cls(keys, current if current is not None else ids[-1])

    @property
    def current(self) -> str:
        """The id of the key new encryptions use."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every live key id, sorted."""
        return tuple(sorted(self._ciphers))

    def __repr__(self) -> str:
        return f"FieldKeyring(current={self._current!r}, key_ids={self.key_ids!r})"

    __str__ = __repr__

    def encrypt(self, plaintext: str, *, table: str, column: str, row_id: str) -> EncryptedField:
        """Encrypt ``plaintext`` for one place (table, column, row) with the current key."""
        if not isinstance(plaintext, str):
            raise TypeError("plaintext must be a str")
        key_id = self._current
        encoded_id = key_id.encode("ascii")
        header = bytes((FORMAT_VERSION_AES256GCM, len(encoded_id))) + encoded_id
        nonce = secrets.token_bytes(NONCE_LEN_BYTES)
        sealed = self._ciphers[key_id].encrypt(
            nonce, plaintext.encode("utf-8"), _aad(header, table, column, row_id)
        )
        return EncryptedField(key_id=key_id, blob=header + nonce + sealed)

    def decrypt(self, blob: bytes, *, table: str, column: str, row_id: str) -> str:
        """The plaintext of a blob stored at (table, column, row), with the key it names.

        Raises :class:`MalformedFieldError`, :class:`UnknownKeyError` or
        :class:`FieldDecryptionError` (wrong place, wrong key, or altered bytes).
        """
        parsed = _parse_blob(blob)
        cipher = self._ciphers.get(parsed.key_id)
        if cipher is None:
            raise UnknownKeyError(parsed.key_id)
        try:
            plain = cipher.decrypt(
                parsed.nonce, parsed.sealed, _aad(parsed.raw, table, column, row_id)
            )
        except InvalidTag:
            raise FieldDecryptionError(
                f"encrypted field {table}.{column} failed authentication under key "
                f"{parsed.key_id!r}: altered, or stored for another row or column"
            ) from None
        return plain.decode("utf-8")

    def key_id_of(self, blob: bytes) -> str:
        """The key id a blob names, without decrypting it."""
        return _parse_blob(blob).key_id

    def needs_reencryption(self, blob: bytes) -> bool:
        """True when the blob is under a key other than the current one (known or not)."""
        return self.key_id_of(blob) != self._current

    def reencrypt(self, blob: bytes, *, table: str, column: str, row_id: str) -> EncryptedField:
        """Decrypt and encrypt again under the current key: one step of the rotation job."""
        plaintext = self.decrypt(blob, table=table, column=column, row_id=row_id)
        return self.encrypt(plaintext, table=table, column=column, row_id=row_id)


class BlindIndex:
    """Keyed digests of canonical values for equality lookups and unique indexes.

    ``digest`` is HMAC-SHA256, lower-case hex (64 characters). Feed it canonical values only
    (:mod:`inventory.privacy.identity`): two spellings of one ID number must give one digest. Store
    ``key_id`` next to the digest; changing the index key means recomputing every digest.
    """

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: bytes, *, key_id: str) -> None:
        _check_key_id(key_id)
        _check_key(key_id, key)
        self._key = bytes(key)
        self._key_id = key_id

    @classmethod
    def from_config(cls, spec: str) -> BlindIndex:
        """Parse one ``"<key id>:<base64 of 32 bytes>"`` entry; :class:`KeyConfigError` if bad."""
        keys = _parse_key_spec(spec)
        if len(keys) != 1:
            raise KeyConfigError("the blind index takes exactly one key")
        ((key_id, key),) = keys.items()
        return cls(key, key_id=key_id)

    @classmethod
    def generate(cls, key_id: str = "test-index") -> BlindIndex:
        """A blind index with a fresh random key, for tests."""
        return cls(secrets.token_bytes(KEY_LEN_BYTES), key_id=key_id)

    @property
    def key_id(self) -> str:
        """The id of the index key, stored with each digest."""
        return self._key_id

    def __repr__(self) -> str:
        return f"BlindIndex(key_id={self._key_id!r})"

    __str__ = __repr__

    def digest(self, canonical_value: str) -> str:
        """HMAC-SHA256 of the UTF-8 value under the index key, as 64 lower-case hex digits."""
        if not isinstance(canonical_value, str):
            raise TypeError("canonical_value must be a str")
        return hmac.new(self._key, canonical_value.encode("utf-8"), hashlib.sha256).hexdigest()
