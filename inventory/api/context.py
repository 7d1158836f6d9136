"""What handlers reach through the application: one typed ``Services`` bundle.

The app factory builds it inside ``cleanup_ctx`` (so pools open and close with the
app); handlers read ``request.app[SERVICES]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from inventory.api.admission import AdmissionGate
from inventory.api.client_address import client_address
from inventory.booking.rescheduling import Rescheduling
from inventory.booking.reservations import Reservations
from inventory.booking.soldout import SoldOutSlots
from inventory.booking.substitution import Substitutions
from inventory.booking.waitlist import Waitlists
from inventory.ops.config import Settings
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.patients import PatientRegistry
from inventory.recovery.fence import StoreVerification
from inventory.release.service import WaitingRooms
from inventory.store.backlog import BacklogCache
from inventory.store.slot_store import SlotStore


@dataclass
class Services:
    """Everything a handler may use."""

    settings: Settings
    store: SlotStore
    #: The hold steps (reserve, release, confirm, cancel) with their limits and caches.
    reservations: Reservations
    #: Moves of bookings to other windows (改约).
    rescheduling: Rescheduling
    #: Offers of a substitute doctor (替诊) and the patients' answers.
    substitutions: Substitutions
    #: The 候补 waitlist's steps (join, look, leave, list).
    waitlists: Waitlists
    gate: AdmissionGate
    catalogue: PgCatalogue
    patients: PatientRegistry
    bookings: PgBookings
    db: Any
    verification: StoreVerification
    #: /readyz's outbox backlog, measured from Redis at most every couple of seconds.
    outbox_backlog: BacklogCache = field(default_factory=BacklogCache)
    #: Slots seen sold out lately, refused without a store call (inventory/booking/soldout.py).
    sold_out: SoldOutSlots = field(default_factory=lambda: SoldOutSlots(0.0))
    #: Release day's waiting rooms (None in servers built without them, e.g. a floor).
    rooms: WaitingRooms | None = None


SERVICES = web.AppKey("services", Services)


def client_ip(request: web.Request) -> str:
    """The client's address: the trusted proxies' header when configured (the entry
    ``trusted_proxy_hops`` from the right, see :mod:`inventory.api.client_address`),
    else the peer."""
    settings = request.app[SERVICES].settings
    return client_address(request, settings.client_ip_header, settings.trusted_proxy_hops)
