"""Reading request bodies and query strings: size-capped, orjson-checked, validated by
pydantic models with unknown fields refused (no mass assignment), bodies in pydantic's
strict mode (JSON types are not coerced into one another). Failures become
``bad_request`` (unreadable) or ``validation_failed`` (each field and why); bad input
never reaches Redis or Postgres."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from inventory.errors import BadRequestError, IdempotencyKeyRequiredError, ValidationFailedError

M = TypeVar("M", bound=BaseModel)

#: The body size cap, set by the app factory from Settings.max_body_bytes.
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)

_IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,64}")


def validation_errors(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``[{field, reason}]`` with dotted field paths."""
    found = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        found.append({"field": field, "reason": str(item["msg"])})
    return found


def validate(model: type[M], data: Any) -> M:
    """``model`` validated from ``data``, or :class:`ValidationFailedError`."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ValidationFailedError(errors=validation_errors(error)) from None


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as ``model``."""
    return parse_json(await read_body(request), model)


async def read_body(request: web.Request) -> bytes:
    """The request's body, checked to be ``application/json`` within the size cap (not
    yet parsed: :func:`parse_json`)."""
    if request.content_type != "application/json":
        raise BadRequestError("the body must be application/json")
    limit = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise BadRequestError(f"the body is larger than {limit} bytes")
    try:
        # read() waits for the whole body (a slow client's body spans many segments);
        # the app's client_max_size caps it.
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequestError(f"the body is larger than {limit} bytes") from None
    if len(raw) > limit:
        raise BadRequestError(f"the body is larger than {limit} bytes")
    return raw


def parse_json(raw: bytes, model: type[M]) -> M:
    """A JSON body (from :func:`read_body`) as ``model``: ``bad_request`` when it is
    not JSON, ``validation_failed`` with each field and why when it is not the model."""
    try:
        # orjson judges the syntax (NaN, lone surrogates and a BOM are not JSON: 400).
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequestError("the body is not valid JSON") from None
    try:
        # Strict, from the JSON itself: a JSON integer is no boolean and the reverse
        # (``0``/``1`` for ``false``/``true``, ``true`` for 1, ``1.0`` for 1 are
        # refused), a number is no date or instant; dates and instants are ISO text.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as error:
        raise ValidationFailedError(errors=validation_errors(error)) from None


def read_query(request: web.Request, model: type[M]) -> M:
    """The query string as ``model`` (a repeated parameter is refused)."""
    params: Mapping[str, str] = request.query
    for name in params:
        if len(params.getall(name)) > 1:  # type: ignore[attr-defined]
            raise ValidationFailedError(errors=[{"field": name, "reason": "given more than once"}])
    return validate(model, dict(params))


def idempotency_key(request: web.Request) -> str:
    """The request's Idempotency-Key header (required on calls that create)."""
    key = request.headers.get("Idempotency-Key", "")
    if not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise IdempotencyKeyRequiredError()
    return key


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response serialised by orjson."""
    return web.Response(
        status=status, body=orjson.dumps(data), content_type="application/json", headers=headers
    )
