"""The simulator's rows drawn as FHIR R4 resources (plain JSON-ready dicts).
docs/his.md maps each of our fields to where it lands here."""

from __future__ import annotations

from typing import Any

from inventory.his.fhir import (
    ORGANIZATION_TYPE,
    PROFESSIONAL_TITLES,
    SYSTEMS,
    fen_to_money,
)
from inventory.simulators.his.state import Row

PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"


def _meta(row: Row) -> dict[str, Any]:
    return {"versionId": str(row["version"]), "lastUpdated": row["updated"]}


def role_id(practitioner_id: str) -> str:
    """Each doctor has one PractitionerRole, named after them."""
    return f"role-{practitioner_id}"


def organization(row: Row) -> dict[str, Any]:
    """The hospital (type prov) or a department (type dept, partOf the hospital)."""
    kind = ("dept", "Hospital Department") if row["part_of"] else ("prov", "Healthcare Provider")
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": row["id"],
        "meta": _meta(row),
        "active": True,
        "type": [{"coding": [{"system": ORGANIZATION_TYPE, "code": kind[0], "display": kind[1]}]}],
        "name": row["name"],
    }
    if row["part_of"]:
        resource["partOf"] = {"reference": f"Organization/{row['part_of']}"}
    return resource


def location(row: Row) -> dict[str, Any]:
    """A department's clinic area: where patients go."""
    return {
        "resourceType": "Location",
        "id": row["id"],
        "meta": _meta(row),
        "status": "active",
        "mode": "instance",
        "name": row["name"],
        "address": {"text": row["address"]},
        "managingOrganization": {"reference": f"Organization/{row['organization_id']}"},
    }


def practitioner(row: Row) -> dict[str, Any]:
    """A doctor; 职称 is the qualification code."""
    title = PROFESSIONAL_TITLES[row["title_code"]]
    return {
        "resourceType": "Practitioner",
        "id": row["id"],
        "meta": _meta(row),
        "active": True,
        "name": [
            {"text": row["family"] + row["given"], "family": row["family"], "given": [row["given"]]}
        ],
        "gender": row["gender"],
        "qualification": [
            {
                "code": {
                    "coding": [
                        {
                            "system": SYSTEMS.professional_title,
                            "code": row["title_code"],
                            "display": title,
                        }
                    ],
                    "text": title,
                }
            }
        ],
    }


def practitioner_role(row: Row) -> dict[str, Any]:
    """The doctor in their department; 擅长 is the specialty text."""
    return {
        "resourceType": "PractitionerRole",
        "id": role_id(row["id"]),
        "meta": _meta(row),
        "active": True,
        "practitioner": {
            "reference": f"Practitioner/{row['id']}",
            "display": row["family"] + row["given"],
        },
        "organization": {
            "reference": f"Organization/{row['department_id']}",
            "display": row["department_name"],
        },
        "code": [{"coding": [{"system": PRACTITIONER_ROLE, "code": "doctor"}]}],
        "specialty": [{"text": row["specialty"]}],
        "location": [
            {"reference": f"Location/{row['location_id']}", "display": row["location_name"]}
        ],
    }


def schedule(row: Row) -> dict[str, Any]:
    """A schedule (排班): actors PractitionerRole + Location, planningHorizon = the
    session, our extensions for session, release time, cancel deadline and fee;
    ``active`` false = suspended (停诊), with the reason."""
    extensions: list[dict[str, Any]] = [
        {"url": SYSTEMS.schedule_session, "valueCode": row["session"]},
        {"url": SYSTEMS.schedule_release_time, "valueDateTime": row["release_at"]},
        {"url": SYSTEMS.schedule_cancel_deadline, "valueDateTime": row["cancel_deadline"]},
        {"url": SYSTEMS.schedule_fee, "valueMoney": fen_to_money(int(row["fee_fen"]))},
    ]
    if row["status_reason"]:
        extensions.append(
            {"url": SYSTEMS.schedule_status_reason, "valueString": row["status_reason"]}
        )
    return {
        "resourceType": "Schedule",
        "id": row["id"],
        "meta": _meta(row),
        "extension": extensions,
        "active": bool(row["active"]),
        "actor": [
            {
                "reference": f"PractitionerRole/{role_id(row['practitioner_id'])}",
                "display": row["doctor_name"],
            },
            {"reference": f"Location/{row['location_id']}", "display": row["location_name"]},
        ],
        "planningHorizon": {"start": row["starts_at"], "end": row["ends_at"]},
        "comment": f"{row['visit_date']} {row['session']}",
    }


def slot_status(row: Row) -> str:
    """busy-unavailable when the schedule is suspended, busy when full, else free."""
    if not row["schedule_active"]:
        return "busy-unavailable"
    return "busy" if row["booked"] >= row["capacity"] else "free"


def slot(row: Row) -> dict[str, Any]:
    """A slot with its capacity and booked count (extensions: R4 Slot has neither)."""
    return {
        "resourceType": "Slot",
        "id": row["id"],
        "meta": _meta(row),
        "extension": [
            {"url": SYSTEMS.slot_capacity, "valueUnsignedInt": int(row["capacity"])},
            {"url": SYSTEMS.slot_booked, "valueUnsignedInt": int(row["booked"])},
        ],
        "schedule": {"reference": f"Schedule/{row['schedule_id']}"},
        "status": slot_status(row),
        "start": row["starts_at"],
        "end": row["ends_at"],
        "overbooked": row["booked"] > row["capacity"],
    }


def appointment(row: Row) -> dict[str, Any]:
    """An appointment: the channel's identifier and the appointment number (就诊序号)
    as identifiers, the visit time as start/end, the place as a Location participant."""
    if row["patient_name"]:
        actor: dict[str, Any] = {"display": row["patient_name"]}
        if row["patient_value"]:
            actor["identifier"] = {"system": row["patient_system"], "value": row["patient_value"]}
        patient: dict[str, Any] = {"actor": actor, "status": "accepted"}
    else:
        patient = {
            "type": [{"coding": [{"system": PARTICIPATION_TYPE, "code": "SBJ"}]}],
            "status": "accepted",
        }
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": row["id"],
        "meta": _meta(row),
        "extension": [{"url": SYSTEMS.appointment_channel, "valueCode": row["channel"]}],
        "identifier": [
            {"system": row["identifier_system"], "value": row["identifier_value"]},
            {"system": SYSTEMS.appointment_number, "value": str(row["number"])},
        ],
        "status": row["status"],
        "start": row["visit_start"],
        "end": row["visit_end"],
        "created": row["created"],
        "slot": [{"reference": f"Slot/{row['slot_id']}"}],
        "participant": [
            patient,
            {
                "actor": {
                    "reference": f"PractitionerRole/{role_id(row['practitioner_id'])}",
                    "display": row["doctor_name"],
                },
                "status": "accepted",
            },
            {
                "actor": {
                    "reference": f"Location/{row['location_id']}",
                    "display": row["location_name"],
                },
                "status": "accepted",
            },
        ],
    }
    if row["cancel_reason"]:
        resource["cancelationReason"] = {"text": row["cancel_reason"]}
    if row["consultation_start"] or row["consultation_end"]:
        # When the doctor actually saw the patient (the Encounter's period), carried on
        # the Appointment so one read gives the whole visit.
        period = {
            k: v
            for k, v in (("start", row["consultation_start"]), ("end", row["consultation_end"]))
            if v
        }
        resource["extension"].append({"url": SYSTEMS.consultation_period, "valuePeriod": period})
    return resource
