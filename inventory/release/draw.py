"""The draw of a queued release: its order and how anyone verifies it.

The seed is 64 hex digits, committed before T0 by publishing ``SHA-256(seed)`` (of the
seed's text, as ASCII). Every ticket that joined before T0 gets the sort key
``SHA-1(seed || ticket)`` (hex; the text of both, concatenated), and the queue is those
tickets in ascending key order, followed by the late joiners in arrival order
(lua/room_advance.lua computes the same keys with Redis's ``redis.sha1hex``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable


def new_seed() -> str:
    """A fresh seed: 256 random bits as 64 hex digits."""
    return secrets.token_hex(32)


def seed_hash(seed: str) -> str:
    """The commitment published before T0: SHA-256 of the seed's text."""
    return hashlib.sha256(seed.encode("ascii")).hexdigest()


def draw_key(seed: str, ticket: str) -> str:
    """A drawn ticket's sort key."""
    return hashlib.sha1((seed + ticket).encode("ascii"), usedforsecurity=False).hexdigest()


def draw_order(seed: str, tickets: Iterable[str]) -> list[str]:
    """The drawn tickets (those that joined before T0) in queue order."""
    return sorted(tickets, key=lambda ticket: (draw_key(seed, ticket), ticket))


def verify(seed: str, published_hash: str, drawn_in_order: list[str]) -> bool:
    """Whether ``seed`` is the committed one and puts ``drawn_in_order`` in that order."""
    return seed_hash(seed) == published_hash and draw_order(seed, drawn_in_order) == drawn_in_order
