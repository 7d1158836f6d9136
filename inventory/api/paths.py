"""Path parameters that name a hold, a booking or a waitlist entry
(``<department_id>.<yyyymmdd>.<token>``, :data:`~inventory.api.models.HoldId`).

A malformed one names nothing: it is answered 404 like an unknown one, and never reaches
Redis or Postgres."""

from __future__ import annotations

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from inventory.api.models import HoldId
from inventory.errors import NotFoundError

_HOLD_ID: TypeAdapter[str] = TypeAdapter(HoldId)


def hold_id_param(request: web.Request, name: str, *, missing: str = "") -> str:
    """The path parameter ``name`` as a hold id, or :class:`NotFoundError` (with the
    message ``missing`` when given)."""
    try:
        return _HOLD_ID.validate_python(request.match_info[name])
    except ValidationError:
        raise (NotFoundError(missing) if missing else NotFoundError()) from None
