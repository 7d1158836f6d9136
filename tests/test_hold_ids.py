"""Hold ids: their base32 token is RFC 4648 base32 of the digest's first 15 bytes, lower
case, written without the generic encoder (keys.b32_120)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.store import keys


@given(st.binary(min_size=15, max_size=15))
def test_b32_120_is_base32(data: bytes) -> None:
    assert keys.b32_120(data) == base64.b32encode(data).decode("ascii").lower()


@pytest.mark.parametrize("data", [b"\x00" * 15, b"\xff" * 15, bytes(range(15))])
def test_b32_120_at_the_edges(data: bytes) -> None:
    assert keys.b32_120(data) == base64.b32encode(data).decode("ascii").lower()


@pytest.mark.parametrize("size", [0, 14, 16])
def test_b32_120_takes_15_bytes_only(size: int) -> None:
    with pytest.raises(ValueError, match="15 bytes"):
        keys.b32_120(b"x" * size)


def test_a_hold_id_is_its_tag_and_the_digest_token() -> None:
    """The id of a reserve names its tag and the (account, key, tag) digest, unchanged."""
    tag = "dept-7:20261201"
    digest = hashlib.sha256(b"acct-1\x00key-1\x00" + tag.encode()).digest()
    token = base64.b32encode(digest[:15]).decode("ascii").lower()
    assert keys.hold_id_for("acct-1", "key-1", tag) == f"dept-7.20261201.{token}"
    assert keys.tag_of_hold(keys.hold_id_for("acct-1", "key-1", tag)) == tag
