"""Stand-ins for the outside systems, run as real HTTP servers by integrators, ``inventory
dev`` and the tests: a HL7 FHIR R4 HIS (:mod:`~inventory.simulators.his`) and a WeChat Pay
API v3 provider (:mod:`~inventory.simulators.paysim`)."""

from __future__ import annotations
