"""How a route is declared: once, beside its handler, with what the OpenAPI document
says of it.

A route module makes one :class:`Routes` and decorates each handler with
``@routes.get(path, operation_id=..., summary=..., response=...)`` (and ``post``,
``put``, ``delete``). The decorator adds the handler to an aiohttp route table, which the
app adds as it would a ``web.RouteTableDef``, and records the route's
:class:`Operation`, from which ``inventory.api.openapi`` renders the document: a route
cannot be served without being documented, nor documented without being served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, TypeVar, Unpack

from aiohttp import hdrs, web
from pydantic import BaseModel

from inventory.api.problems import Handler

#: Who may call a route: an account's token, a token with the operator role, a token
#: with the staff role (or the operator role).
Auth = Literal["account", "operator", "staff"]
#: How a route takes an ``Idempotency-Key``: ``required`` by the reserve (kept in Redis by
#: the script that makes the hold), ``recorded`` where an optional key's answer is kept
#: in Postgres and replayed to a retry (``inventory.api.idempotency``).
Idempotency = Literal["required", "recorded"]
#: What a route answers: a view model, or a JSON Schema for what no model describes.
Answer = type[BaseModel] | dict[str, Any]

H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class Operation:
    """One route as the document describes it."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    ok_status: int
    response: Answer
    auth: Auth | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: Error statuses the route answers besides 400, 405 and 500 (which every route may).
    errors: tuple[int, ...] = ()
    idempotency: Idempotency | None = None
    #: Other success statuses: the same body, or 304 without one.
    extra_ok: tuple[int, ...] = ()
    content_types: tuple[str, ...] = ("application/json",)
    #: The body of the route's error answers when it is not problem+json (the legacy
    #: envelope); 405 and 500 are problem+json everywhere.
    error_body: type[BaseModel] | None = None


class Declaration(TypedDict):
    """What a route module says of a route, beside its method and path (the fields of
    :class:`Operation`; ``tag`` defaults to the module's)."""

    operation_id: str
    summary: str
    response: Answer
    ok_status: NotRequired[int]
    tag: NotRequired[str]
    auth: NotRequired[Auth]
    body: NotRequired[type[BaseModel]]
    query: NotRequired[type[BaseModel]]
    errors: NotRequired[tuple[int, ...]]
    idempotency: NotRequired[Idempotency]
    extra_ok: NotRequired[tuple[int, ...]]
    content_types: NotRequired[tuple[str, ...]]
    error_body: NotRequired[type[BaseModel]]


class Routes:
    """A route module's routes: an aiohttp route table (``app.add_routes(routes)``) and
    the operations declared with them, in declaration order."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []
        self._table = web.RouteTableDef()

    def __iter__(self) -> Iterator[web.AbstractRouteDef]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def get(self, path: str, **declared: Unpack[Declaration]) -> Callable[[H], H]:
        return self._route(hdrs.METH_GET, path, declared)

    def post(self, path: str, **declared: Unpack[Declaration]) -> Callable[[H], H]:
        return self._route(hdrs.METH_POST, path, declared)

    def put(self, path: str, **declared: Unpack[Declaration]) -> Callable[[H], H]:
        return self._route(hdrs.METH_PUT, path, declared)

    def delete(self, path: str, **declared: Unpack[Declaration]) -> Callable[[H], H]:
        return self._route(hdrs.METH_DELETE, path, declared)

    def _route(self, method: str, path: str, declared: Declaration) -> Callable[[H], H]:
        operation = Operation(
            method=method.lower(),
            path=path,
            operation_id=declared["operation_id"],
            summary=declared["summary"],
            tag=declared.get("tag", self.tag),
            ok_status=declared.get("ok_status", 200),
            response=declared["response"],
            auth=declared.get("auth"),
            body=declared.get("body"),
            query=declared.get("query"),
            errors=declared.get("errors", ()),
            idempotency=declared.get("idempotency"),
            extra_ok=declared.get("extra_ok", ()),
            content_types=declared.get("content_types", ("application/json",)),
            error_body=declared.get("error_body"),
        )

        def add(handler: H) -> H:
            # Served and documented together, or neither.
            self._table.route(method, path)(handler)
            self.operations.append(operation)
            return handler

        return add
