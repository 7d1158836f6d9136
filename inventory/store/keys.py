"""Every Redis key and stream name, hash tags included. Nowhere else builds them.

A *tag* is one department on one visit date. All state that a single step reads or
writes lives under the tag's hash tag, so every script runs unchanged on Redis Cluster
and the rule "one open hold or booking per patient per hospital, department and day"
is checked inside the reserve step itself. Rules that span tags live under a
*patient tag* and use the two-step reservation (see lua/includes/patient.lua).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import date
from typing import Final

#: Ids we put into key names: ASCII letters, digits, "_" and "-" only, so that ":",
#: "|", "." and "{}" stay free as separators (re.ASCII: no other scripts' digits).
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)

#: The set of every tag that has schedules, so the expirer can find them all.
TAG_REGISTRY_KEY = "inv:tags"

#: The run id of the Redis server whose every tag the fence has compared with Postgres
#: since it started; API processes refuse state changes on any other server.
VERIFIED_RUN_KEY = "inv:verified_run_id"

#: Hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384

#: Where each slot lives (slot id -> "hospital|department|yyyy-mm-dd|schedule"), written
#: with its schedule: the API finds a slot it has not served yet without Postgres.
SLOT_LOCATIONS_KEY = "inv:slot_locations"

#: The releases whose waiting rooms are not sold out yet, so the worker can move them all.
RELEASE_REGISTRY_KEY = "inv:releases"

#: SCAN pattern matching every outbox stream, both kinds of tag.
OUTBOX_SCAN_PATTERN = "inv:{*}:outbox"


class InvalidIdError(ValueError):
    """An id that cannot be used in a key name (or a hold id of the wrong shape)."""


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError`."""
    if not ID_RE.fullmatch(value):
        raise InvalidIdError(f"{what} must be 1-64 ASCII letters, digits, '_' or '-'")
    return value


# Cached: every reserve derives its tag and key names, from a small set of departments
# and days (strftime and eight f-strings per call are most of their cost).
@functools.lru_cache(maxsize=16_384)
def department_day_tag(department_id: str, visit_date: date) -> str:
    """The tag of one department on one visit date, e.g. ``dept-7:20261201``."""
    return f"{check_id(department_id, 'department_id')}:{visit_date:%Y%m%d}"


@dataclass(frozen=True, slots=True)
class TagKeys:
    """The eleven keys of a department-day tag, in the order every script takes them."""

    tag: str
    meta: str
    schedules: str
    slots: str
    holds: str
    patients: str
    timers: str
    slot_timers: str
    outbox: str
    waitlist: str
    waitq: str
    offers: str

    def as_list(self) -> list[str]:
        """KEYS[1..11] for a state-machine script (lua/includes/tag.lua)."""
        return [
            self.meta,
            self.schedules,
            self.slots,
            self.holds,
            self.patients,
            self.timers,
            self.slot_timers,
            self.outbox,
            self.waitlist,
            self.waitq,
            self.offers,
        ]


@functools.lru_cache(maxsize=16_384)
def tag_keys(tag: str) -> TagKeys:
    """The keys of ``tag``; all share the hash tag ``{tag}``."""
    prefix = f"inv:{{{tag}}}:"
    return TagKeys(
        tag=tag,
        meta=prefix + "meta",
        schedules=prefix + "schedules",
        slots=prefix + "slots",
        holds=prefix + "holds",
        patients=prefix + "patients",
        timers=prefix + "timers",
        slot_timers=prefix + "slot_timers",
        outbox=prefix + "outbox",
        waitlist=prefix + "waitlist",
        waitq=prefix + "waitq",
        offers=prefix + "offers",
    )


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The keys of a tag's waiting rooms (lua/includes/room.lua): passed after the tag's
    own keys to the room scripts, and alone (in this order) to room_status."""

    rooms: str
    tickets: str
    queue: str

    def as_list(self) -> list[str]:
        """The three keys, in the order the scripts take them."""
        return [self.rooms, self.tickets, self.queue]


@functools.lru_cache(maxsize=4_096)
def room_keys(tag: str) -> RoomKeys:
    """The waiting-room keys of ``tag``, under the same hash tag ``{tag}`` as its
    schedules, so reserve checks an admission token in its own step."""
    prefix = f"inv:{{{tag}}}:"
    return RoomKeys(
        rooms=prefix + "rooms", tickets=prefix + "room_tickets", queue=prefix + "room_queue"
    )


_RELEASE_ID_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{8})\.([A-Za-z0-9_-]{1,64})", re.ASCII)
_TICKET_RE = re.compile(r"[a-z2-7]{24}", re.ASCII)


def release_id_for(department_id: str, visit_date: date, name: str) -> str:
    """A release's id: ``<department>.<yyyymmdd>.<name>``, naming its tag as a hold id
    does."""
    return (
        f"{check_id(department_id, 'department_id')}.{visit_date:%Y%m%d}.{check_id(name, 'name')}"
    )


def tag_of_release(release_id: str) -> str:
    """The tag a release id belongs to; :class:`InvalidIdError` if it is not one."""
    match = _RELEASE_ID_RE.fullmatch(release_id)
    if match is None:
        raise InvalidIdError("not a release id")
    return f"{match.group(1)}:{match.group(2)}"


def check_ticket_id(ticket_id: str) -> str:
    """``ticket_id`` if it has a ticket's shape (24 base32 letters), else
    :class:`InvalidIdError`."""
    if not _TICKET_RE.fullmatch(ticket_id):
        raise InvalidIdError("not a ticket id")
    return ticket_id


@dataclass(frozen=True, slots=True)
class PatientKeys:
    """The keys of a patient tag (rules that span department-day tags)."""

    tokens: str
    bans: str
    outbox: str

    def as_list(self) -> list[str]:
        """KEYS[1..3] for a patient script."""
        return [self.tokens, self.bans, self.outbox]


def patient_keys(patient_id: str) -> PatientKeys:
    """The keys of a patient's tag; all share the hash tag ``{p:<patient_id>}``."""
    prefix = f"inv:{{p:{check_id(patient_id, 'patient_id')}}}:"
    return PatientKeys(tokens=prefix + "tokens", bans=prefix + "bans", outbox=prefix + "outbox")


def patient_waitlist_keys(patient_id: str) -> PatientKeys:
    """The patient tag's keys with the patient's waitlist entries in place of its hold
    tokens: the two-step scripts (patient_acquire, patient_settle, patient_release,
    patient_reap) then count entries exactly as they count holds (at most N per patient,
    leftovers of a process that died between the steps reaped)."""
    found = patient_keys(patient_id)
    prefix = found.tokens.removesuffix("tokens")
    return PatientKeys(tokens=prefix + "waitlist", bans=found.bans, outbox=found.outbox)


def node_verified_key(hashtag: str) -> str:
    """A Cluster primary's verification record: the run id the fence compared in full,
    under a hash tag in one of the primary's own slots (see inventory/recovery/fence.py)."""
    return f"inv:{{{hashtag}}}:verified_run_id"


def patient_accounts_key(patient_id: str) -> str:
    """The accounts that may book for a patient (a hash: account id -> "1"; about 120
    bytes a patient, half of what a set takes on Redis 7.0): a copy of Postgres's
    ``account_patients`` rows, so that reserves for patients this process never saw
    keep working while Postgres is down (written at registration, repaired when
    Postgres is asked). Under the patient's hash tag, beside its tokens and bans."""
    return f"inv:{{p:{check_id(patient_id, 'patient_id')}}}:accounts"


def rate_limit_key(kind: str, subject: str) -> str:
    """A rate-limit bucket, e.g. kind "acct" for an account, "ip" for a client address.

    The subject is hashed: client addresses and other free text never become key names.
    """
    digest = hashlib.sha256(subject.encode()).hexdigest()[:24]
    return f"inv:rl:{{{kind}:{digest}}}"


def login_code_keys(phone_mac: str) -> tuple[str, str]:
    """An SMS login code's record and its phone's wrong-try count, under one hash tag.

    ``phone_mac`` is the phone's HMAC under the code key (hex), never the phone: a phone
    number hashed without a key is found again by trying every number."""
    check_id(phone_mac, "phone digest")
    base = f"inv:login:{{sms:{phone_mac[:32]}}}"
    return f"{base}:code", f"{base}:failures"


#: Every pair of base32 letters (RFC 4648's alphabet, lower case), by the 10 bits they
#: encode: 120 bits are 12 pairs, read straight from the digest's integer.
_B32_PAIRS: Final = tuple(
    a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"
)


def b32_120(data: bytes) -> str:
    """15 bytes (120 bits) as 24 lower-case base32 letters: what
    ``base64.b32encode(data).decode().lower()`` gives (15 bytes need no padding),
    without its generic chunking and padding code, on every reserve's hold id."""
    if len(data) != 15:
        raise ValueError("b32_120 takes exactly 15 bytes")
    n = int.from_bytes(data, "big")
    pairs = _B32_PAIRS
    return "".join(
        (
            pairs[n >> 110],
            pairs[(n >> 100) & 0x3FF],
            pairs[(n >> 90) & 0x3FF],
            pairs[(n >> 80) & 0x3FF],
            pairs[(n >> 70) & 0x3FF],
            pairs[(n >> 60) & 0x3FF],
            pairs[(n >> 50) & 0x3FF],
            pairs[(n >> 40) & 0x3FF],
            pairs[(n >> 30) & 0x3FF],
            pairs[(n >> 20) & 0x3FF],
            pairs[(n >> 10) & 0x3FF],
            pairs[n & 0x3FF],
        )
    )


def hold_id_for(account_id: str, idempotency_key: str, tag: str) -> str:
    """The hold id for a reserve: a pure function of (account, idempotency key, tag).

    A retry with the same key therefore lands on the same hold, inside the same
    atomic step that decides it, and the id names its tag so later steps find it.
    The digest keeps one account's ids unguessable from another's.
    """
    department_id, day = tag.split(":")
    digest = hashlib.sha256(f"{account_id}\x00{idempotency_key}\x00{tag}".encode()).digest()
    token = b32_120(digest[:15])
    return f"{department_id}.{day}.{token}"


def waitlist_entry_id_for(account_id: str, idempotency_key: str, tag: str) -> str:
    """A waitlist entry's id: a pure function of (account, idempotency key, tag), so a
    retried join lands on the same entry; shaped like a hold id (its tag readable with
    :func:`tag_of_hold`) and never equal to one (another digest input)."""
    department_id, day = tag.split(":")
    material = f"waitlist\x00{account_id}\x00{idempotency_key}\x00{tag}"
    token = b32_120(hashlib.sha256(material.encode()).digest()[:15])
    return f"{department_id}.{day}.{token}"


def offer_hold_id_for(entry_id: str) -> str:
    """The hold id a waitlist entry's offer takes (one offer per entry), in its tag."""
    department_id, day, _ = entry_id.split(".")
    token = b32_120(hashlib.sha256(f"offer\x00{entry_id}".encode()).digest()[:15])
    return f"{department_id}.{day}.{token}"


_HOLD_ID_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{8})\.([a-z2-7]{24})", re.ASCII)


def tag_of_hold(hold_id: str) -> str:
    """The tag a hold id belongs to; :class:`InvalidIdError` if it is not a hold id."""
    match = _HOLD_ID_RE.fullmatch(hold_id)
    if match is None:
        raise InvalidIdError("not a hold id")
    return f"{match.group(1)}:{match.group(2)}"


def visit_date_of_tag(tag: str) -> date:
    """The visit date a tag covers."""
    day = tag.rsplit(":", 1)[1]
    return date(int(day[:4]), int(day[4:6]), int(day[6:]))
