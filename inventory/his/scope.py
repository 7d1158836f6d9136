"""Which hospitals one HIS connection serves: its flows (sync, submission,
reconciliation) read and claim only those hospitals' schedules and bookings, so each
connection has its own queue (inventory/his/connections.py)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EVERY_HOSPITAL", "HospitalScope"]


@dataclass(frozen=True, slots=True)
class HospitalScope:
    """Which hospitals' bookings and schedules a connection's flows touch: ``only`` those
    (a hospital's own connection), or every hospital ``but`` those (the default)."""

    only: tuple[str, ...] | None = None
    but: tuple[str, ...] = ()

    def includes(self, hospital_id: str) -> bool:
        """Whether the scope covers ``hospital_id``."""
        if self.only is not None and hospital_id not in self.only:
            return False
        return hospital_id not in self.but

    def params(self) -> tuple[list[str] | None, list[str]]:
        """The two query parameters (``only_hospitals``, ``but_hospitals``)."""
        return (list(self.only) if self.only is not None else None, list(self.but))


#: Every hospital: a single HIS for all, as before connections existed.
EVERY_HOSPITAL = HospitalScope()
