"""Every route table of the API, in the order the OpenAPI document lists them.

The app adds exactly these tables (``inventory.app``) and the document describes exactly
their operations (``inventory.api.openapi``): each route is declared once, on its
handler's decorator (``inventory.api.routing``). A new route module is added here.
"""

from __future__ import annotations

from typing import Final

from inventory.api import (
    audit_log,
    capacity,
    catalogue,
    console,
    desk,
    docs,
    health,
    holds,
    legacy,
    login,
    merchants,
    notifications,
    observability,
    operators,
    patients,
    payments,
    releases,
    reports,
    visits,
    waitlist,
    webapp,
)
from inventory.api.routing import Operation, Routes

TABLES: Final[tuple[Routes, ...]] = (
    health.routes,
    observability.routes,
    catalogue.routes,
    login.routes,
    patients.routes,
    holds.routes,
    waitlist.routes,
    payments.routes,
    operators.routes,
    desk.routes,
    merchants.routes,
    notifications.routes,
    visits.routes,
    capacity.routes,
    reports.routes,
    audit_log.routes,
    releases.routes,
    legacy.routes,
    docs.routes,
    webapp.routes,
    console.routes,
)
#: Every route's operation, in the document's order.
OPERATIONS: Final[tuple[Operation, ...]] = tuple(
    operation for table in TABLES for operation in table.operations
)
