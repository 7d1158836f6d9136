"""slot-inventory: appointment-slot inventory for hospital booking.

Every slot is sold at most once, every paid booking survives a single crash, and the
hospital's HIS is shielded from the release-time storm. See README.md and docs/.
"""

from __future__ import annotations

__version__ = "0.1.0"
