"""The FHIR R4 vocabulary both sides of the HIS boundary share: media type, the
identifier systems and extension URLs we use, refusal codes, OperationOutcome, money.

Every URI here is ours (``http://slot-inventory.dev/fhir/...``) except the HL7
terminology ones; a real HIS that names things differently is met by passing another
:class:`FhirSystems` to the client. docs/his.md explains each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
BASE = "http://slot-inventory.dev/fhir"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
CURRENCY = "CNY"

#: Why the HIS refused a change; the ``code`` of the refusal coding in an
#: OperationOutcome issue's ``details``.
REFUSAL_SYSTEM = f"{BASE}/CodeSystem/his-refusal"
SESSIONS = ("morning", "afternoon", "evening")
#: Where an appointment came from: us (a booking front end through this service), or
#: the hospital's own channels.
CHANNELS = ("platform", "window", "phone")


@dataclass(frozen=True, slots=True)
class FhirSystems:
    """Identifier systems and extension URLs, one place, overridable for a real HIS."""

    #: Our booking id, sent as the Appointment identifier (the idempotency key).
    booking: str = f"{BASE}/identifier/booking"
    #: The HIS's appointment number (就诊序号), assigned on create.
    appointment_number: str = f"{BASE}/identifier/appointment-number"
    #: Prefix of other channels' identifiers: ``<prefix>/window``, ``<prefix>/phone``.
    channel_prefix: str = f"{BASE}/identifier/channel"
    #: A patient's resident ID number (居民身份证号).
    resident_id: str = f"{BASE}/identifier/resident-id"
    professional_title: str = f"{BASE}/CodeSystem/professional-title"
    slot_capacity: str = f"{BASE}/StructureDefinition/slot-capacity"
    slot_booked: str = f"{BASE}/StructureDefinition/slot-booked"
    schedule_session: str = f"{BASE}/StructureDefinition/schedule-session"
    schedule_release_time: str = f"{BASE}/StructureDefinition/schedule-release-time"
    schedule_cancel_deadline: str = f"{BASE}/StructureDefinition/schedule-cancel-deadline"
    schedule_fee: str = f"{BASE}/StructureDefinition/schedule-fee"
    schedule_status_reason: str = f"{BASE}/StructureDefinition/schedule-status-reason"
    appointment_channel: str = f"{BASE}/StructureDefinition/appointment-channel"
    #: When the consultation ran (a Period: start, end), on an arrived or fulfilled
    #: Appointment: the Encounter's period.
    consultation_period: str = f"{BASE}/StructureDefinition/consultation-period"

    def channel_identifier(self, channel: str) -> str:
        """The identifier system of appointments made through ``channel``."""
        return self.booking if channel == "platform" else f"{self.channel_prefix}/{channel}"


SYSTEMS = FhirSystems()

#: 职称 codes (ours) and how they read.
PROFESSIONAL_TITLES = {
    "chief-physician": "主任医师",
    "associate-chief-physician": "副主任医师",
    "attending-physician": "主治医师",
    "resident-physician": "住院医师",
}


def operation_outcome(
    code: str,
    diagnostics: str,
    *,
    refusal: str | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    """An OperationOutcome with one issue; ``refusal`` adds the machine reason."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if refusal is not None:
        issue["details"] = {
            "coding": [{"system": REFUSAL_SYSTEM, "code": refusal}],
            "text": diagnostics,
        }
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fen_to_money(fen: int) -> dict[str, Any]:
    """A FHIR Money in yuan from integer fen (exact: Decimal, two places)."""
    return {"value": float(Decimal(fen) / 100), "currency": CURRENCY}


def money_to_fen(value: Decimal | float | int | str) -> int:
    """Integer fen from a Money value in yuan; refuses fractions of a fen."""
    fen = Decimal(str(value)) * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"money value {value} is not a whole number of fen")
    return int(fen)
