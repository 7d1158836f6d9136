"""The HIS client: one small interface (:class:`HisClient`) and its FHIR R4 over HTTP
implementation (:class:`FhirHisClient`).

Every call goes through, in order: the circuit breaker (fails fast when open), the
concurrency limit (a semaphore), the rate limit (a token bucket), then one HTTP attempt
with an explicit timeout and a cap on the answer's size. Idempotent operations (all of
them here: reads, the conditional create, the cancel) are retried on
:class:`HisUnavailableError` with exponential back-off and full jitter, via stamina.
Every answer is validated with the fhir.resources R4B models before it is mapped.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
import orjson
import stamina
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.location import Location
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot

from inventory.his import mapping
from inventory.his.auth import HisAuth
from inventory.his.errors import (
    HisAuthError,
    HisProtocolError,
    HisRefusedError,
    HisUnavailableError,
)
from inventory.his.fhir import FHIR_JSON, FhirSystems
from inventory.his.resilience import (
    BreakerState,
    CircuitBreaker,
    FullJitterBackoff,
    TokenBucket,
)
from inventory.his.types import (
    HisAppointment,
    HisCatalogue,
    HisPatient,
    HisRefusal,
    HisSchedule,
    HisSlot,
)

__all__ = [
    "FhirHisClient",
    "HisCallObserver",
    "HisClient",
    "HisClientConfig",
    "HisClientStats",
]


class HisClient(Protocol):
    """What the flows need from a HIS, whatever protocol it speaks.

    Errors: :class:`~inventory.his.errors.HisRefusedError` (the HIS said no; nothing
    changed), :class:`~inventory.his.errors.HisUnavailableError` (no usable answer after
    the retries; may or may not have happened; safe to call again later),
    :class:`~inventory.his.errors.HisProtocolError` (an answer we refuse to trust).
    """

    async def fetch_catalogue(self) -> HisCatalogue:
        """The hospital, its departments, doctors and locations."""
        ...

    async def list_schedules(self, first_day: date, last_day: date) -> list[HisSchedule]:
        """Every schedule with a visit date in ``[first_day, last_day]``, with its slots
        (suspended ones included: ``active`` is False)."""
        ...

    async def get_schedule(self, schedule_id: str) -> HisSchedule | None:
        """One schedule with its slots, or None if the HIS does not know it."""
        ...

    async def create_appointment(
        self, booking_id: str, slot_id: str, patient: HisPatient | None = None
    ) -> HisAppointment:
        """Book one unit of ``slot_id`` for our booking; idempotent on ``booking_id``:
        a repeat returns the appointment made the first time."""
        ...

    async def get_appointment(self, appointment_id: str) -> HisAppointment | None:
        """One appointment by the HIS's id, or None."""
        ...

    async def find_appointment(self, booking_id: str) -> HisAppointment | None:
        """The appointment carrying our booking id, or None."""
        ...

    async def search_appointments(
        self, *, schedule_id: str | None = None, visit_date: date | None = None
    ) -> list[HisAppointment]:
        """Appointments of every channel (and status) of a schedule and/or a visit date."""
        ...

    async def cancel_appointment(self, appointment_id: str, reason: str) -> HisAppointment:
        """Cancel (idempotent: cancelling a cancelled appointment returns it)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


#: Called after every HTTP attempt: (operation, seconds, outcome), outcome one of
#: ``ok``, ``refused``, ``not_found``, ``unavailable``, ``protocol``, ``circuit_open``,
#: ``abandoned`` (cancelled mid-call).
HisCallObserver = Callable[[str, float, str], None]


@dataclass(frozen=True, slots=True)
class HisClientConfig:
    """Everything :class:`FhirHisClient` needs. Durations in seconds."""

    #: The FHIR base, e.g. ``http://127.0.0.1:8090/fhir``.
    base_url: str
    connect_timeout_s: float = 2.0
    #: One HTTP attempt, connect to last byte.
    request_timeout_s: float = 5.0
    #: All attempts of one call, back-off included (stamina's ``timeout``).
    total_timeout_s: float = 30.0
    attempts: int = 5
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    max_concurrency: int = 8
    rate_per_s: float = 20.0
    burst: int = 10
    breaker_failures: int = 5
    breaker_cooldown_s: float = 15.0
    max_response_bytes: int = 8 * 1024 * 1024
    page_size: int = 100
    #: Pages of one search at most (a HIS that pages forever is stopped).
    max_pages: int = 200
    systems: FhirSystems = field(default_factory=FhirSystems)
    user_agent: str = "slot-inventory-his-client/1"

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL: {self.base_url!r}")
        for name in ("connect_timeout_s", "request_timeout_s", "total_timeout_s", "rate_per_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("attempts", "max_concurrency", "burst", "breaker_failures", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(slots=True)
class _Answer:
    status: int
    body: Any


@dataclass(slots=True)
class HisClientStats:
    """Counters a metrics exporter can read."""

    attempts: int = 0
    retries: int = 0
    failures: int = 0
    refusals: int = 0
    in_flight: int = 0


class FhirHisClient:
    """:class:`HisClient` over FHIR R4 JSON and HTTP (aiohttp).

    Use as ``async with FhirHisClient(config) as his: ...`` or call :meth:`close`.
    ``breaker`` is public so its state can be exported; ``stats`` counts attempts.
    ``auth`` adds a bearer token to every request (a 401 drops it, and the request is
    sent once more with a fresh one); ``ssl_context`` carries a CA bundle and, for mutual
    TLS, the client's certificate (the token endpoint is reached with it too);
    ``ssl_reload`` returns a new context when the certificate files changed, and new
    connections use it from then on.
    """

    def __init__(
        self,
        config: HisClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        observer: HisCallObserver | None = None,
        on_breaker_change: Callable[[BreakerState, BreakerState], None] | None = None,
        auth: HisAuth | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_reload: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._ssl_reload = ssl_reload
        #: Sessions left by a TLS reload, closed with the client (calls may still use them).
        self._retired: list[aiohttp.ClientSession] = []
        self._base = config.base_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._rng = rng or random.Random()
        self._observer = observer
        self._systems = config.systems
        self.breaker = CircuitBreaker(
            config.breaker_failures, config.breaker_cooldown_s, on_change=on_breaker_change
        )
        self._bucket = TokenBucket(config.rate_per_s, config.burst)
        self._limit = asyncio.Semaphore(config.max_concurrency)
        self.stats = HisClientStats()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client made it."""
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None
        for retired in self._retired:
            await retired.close()
        self._retired.clear()

    # ----------------------------------------------------------------------------------
    # the operations
    # ----------------------------------------------------------------------------------

    async def fetch_catalogue(self) -> HisCatalogue:
        """The hospital, departments, doctors and locations (each list paged through)."""
        organizations = [
            r
            for r, _ in await self._search("Organization", {}, op="catalogue")
            if isinstance(r, Organization)
        ]
        roles_and_people = await self._search(
            "PractitionerRole",
            {"_include": "PractitionerRole:practitioner"},
            op="catalogue",
        )
        locations = [
            r
            for r, _ in await self._search("Location", {}, op="catalogue")
            if isinstance(r, Location)
        ]
        hospital = next((o for o in organizations if o.partOf is None), None)
        if hospital is None or not hospital.id:
            raise HisProtocolError("the HIS lists no hospital (an Organization without partOf)")
        practitioners = {
            str(r.id): r for r, _ in roles_and_people if isinstance(r, Practitioner) and r.id
        }
        departments = [d for o in organizations if (d := mapping.to_department(o))]
        doctors = [
            mapping.to_doctor(r, practitioners, self._systems)
            for r, mode in roles_and_people
            if isinstance(r, PractitionerRole) and mode == "match"
        ]
        return HisCatalogue(
            hospital_id=str(hospital.id),
            hospital_name=str(hospital.name or ""),
            departments=tuple(departments),
            doctors=tuple(doctors),
            locations=tuple(mapping.to_location(loc) for loc in locations),
        )

    async def list_schedules(self, first_day: date, last_day: date) -> list[HisSchedule]:
        """Schedules of the window with their slots, in one paged search."""
        if last_day < first_day:
            raise ValueError("last_day is before first_day")
        params: dict[str, str | list[str]] = {
            "date": [f"ge{first_day.isoformat()}", f"le{last_day.isoformat()}"],
            "_include": "Schedule:actor",
            "_revinclude": "Slot:schedule",
        }
        return self._schedules(await self._search("Schedule", params, op="list_schedules"))

    async def get_schedule(self, schedule_id: str) -> HisSchedule | None:
        """One schedule with its slots, or None."""
        params = {
            "_id": schedule_id,
            "_include": "Schedule:actor",
            "_revinclude": "Slot:schedule",
        }
        found = self._schedules(await self._search("Schedule", params, op="get_schedule"))
        return next((s for s in found if s.schedule_id == schedule_id), None)

    async def create_appointment(
        self, booking_id: str, slot_id: str, patient: HisPatient | None = None
    ) -> HisAppointment:
        """POST an Appointment with ``If-None-Exist: identifier=<booking system>|<id>``:
        the HIS creates it (201) or returns the one it already has (200)."""
        systems = self._systems
        body: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": "booked",
            "identifier": [{"system": systems.booking, "value": booking_id}],
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [self._patient_participant(patient)],
            "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        }
        condition = urllib.parse.urlencode(
            {"identifier": f"{systems.booking}|{booking_id}"}, safe=":/|"
        )
        answer = await self._call(
            "POST",
            f"{self._base}/Appointment",
            op="create_appointment",
            body=orjson.dumps(body),
            headers={"If-None-Exist": condition, "Content-Type": FHIR_JSON},
            ok=(200, 201),
        )
        appointment = mapping.to_appointment(
            mapping.validate(answer.body, Appointment), self._systems
        )
        if appointment.booking_id != booking_id:
            raise HisProtocolError(
                f"the HIS answered a create for {booking_id} with another appointment"
            )
        return appointment

    async def get_appointment(self, appointment_id: str) -> HisAppointment | None:
        """GET Appointment/<id>; None on 404."""
        answer = await self._call(
            "GET",
            f"{self._base}/Appointment/{_path_id(appointment_id)}",
            op="get_appointment",
            ok=(200,),
            missing_ok=True,
        )
        if answer.status == 404:
            return None
        return mapping.to_appointment(mapping.validate(answer.body, Appointment), self._systems)

    async def find_appointment(self, booking_id: str) -> HisAppointment | None:
        """Search by our identifier; more than one match breaks the HIS's promise."""
        params = {"identifier": f"{self._systems.booking}|{booking_id}"}
        found = [
            mapping.to_appointment(r, self._systems)
            for r, mode in await self._search("Appointment", params, op="find_appointment")
            if isinstance(r, Appointment) and mode == "match"
        ]
        if len(found) > 1:
            raise HisProtocolError(f"the HIS holds {len(found)} appointments for one booking")
        return found[0] if found else None

    async def search_appointments(
        self, *, schedule_id: str | None = None, visit_date: date | None = None
    ) -> list[HisAppointment]:
        """Appointments of a schedule (chained through Slot) and/or a visit date."""
        if schedule_id is None and visit_date is None:
            raise ValueError("give schedule_id, visit_date or both")
        params: dict[str, str | list[str]] = {}
        if schedule_id is not None:
            params["slot.schedule"] = f"Schedule/{schedule_id}"
        if visit_date is not None:
            params["date"] = visit_date.isoformat()
        return [
            mapping.to_appointment(r, self._systems)
            for r, mode in await self._search("Appointment", params, op="search_appointments")
            if isinstance(r, Appointment) and mode == "match"
        ]

    async def cancel_appointment(self, appointment_id: str, reason: str) -> HisAppointment:
        """PATCH (JSON Patch) the status to cancelled; the same patch twice is the same
        state, so it is retried like a read."""
        patch = [
            {"op": "replace", "path": "/status", "value": "cancelled"},
            {"op": "add", "path": "/cancelationReason", "value": {"text": reason[:200]}},
        ]
        answer = await self._call(
            "PATCH",
            f"{self._base}/Appointment/{_path_id(appointment_id)}",
            op="cancel_appointment",
            body=orjson.dumps(patch),
            headers={"Content-Type": "application/json-patch+json"},
            ok=(200,),
        )
        return mapping.to_appointment(mapping.validate(answer.body, Appointment), self._systems)

    # ----------------------------------------------------------------------------------
    # searches and schedules
    # ----------------------------------------------------------------------------------

    def _schedules(self, found: Sequence[tuple[Resource, str]]) -> list[HisSchedule]:
        roles = {str(r.id): r for r, _ in found if isinstance(r, PractitionerRole) and r.id}
        locations = {str(r.id): r for r, _ in found if isinstance(r, Location) and r.id}
        slots: dict[str, list[HisSlot]] = {}
        for resource, _ in found:
            if isinstance(resource, Slot):
                slot = mapping.to_slot(resource, self._systems)
                slots.setdefault(slot.schedule_id, []).append(slot)
        schedules = [
            mapping.to_schedule(
                r,
                self._systems,
                roles=roles,
                locations=locations,
                slots=slots.get(str(r.id), ()),
            )
            for r, mode in found
            if isinstance(r, Schedule) and mode == "match"
        ]
        return sorted(schedules, key=lambda s: (s.starts_at, s.schedule_id))

    async def _search(
        self, kind: str, params: Mapping[str, str | list[str]], *, op: str
    ) -> list[tuple[Resource, str]]:
        """Every entry of a search, following ``next`` links on the same origin."""
        query = [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)]
        query.append(("_count", str(self.config.page_size)))
        url: str | None = f"{self._base}/{kind}?{urllib.parse.urlencode(query)}"
        found: list[tuple[Resource, str]] = []
        seen: set[str] = set()
        for _ in range(self.config.max_pages):
            if url is None:
                return found
            if url in seen:
                raise HisProtocolError("the HIS's next link loops")
            seen.add(url)
            answer = await self._call("GET", url, op=op, ok=(200,))
            # A page of a few hundred resources takes pydantic a few hundred ms: off the
            # event loop, so the worker's other loops keep their pace.
            bundle = await asyncio.to_thread(mapping.validate, answer.body, Bundle)
            found.extend(mapping.bundle_resources(bundle))
            url = self._next_link(bundle)
        raise HisProtocolError(f"a {kind} search ran past {self.config.max_pages} pages")

    def _next_link(self, bundle: Bundle) -> str | None:
        for link in bundle.link or ():
            if link.relation == "next" and link.url:
                target = urllib.parse.urljoin(self._base + "/", str(link.url))
                if not _same_origin(target, self._base):
                    raise HisProtocolError("the HIS's next link leaves its origin")
                return target
        return None

    def _patient_participant(self, patient: HisPatient | None) -> dict[str, Any]:
        if patient is None:
            # A participant needs an actor or a type (FHIR invariant app-1).
            return {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "SBJ",
                            }
                        ]
                    }
                ],
                "status": "accepted",
            }
        actor: dict[str, Any] = {"display": patient.name}
        if patient.resident_id:
            actor["identifier"] = {
                "system": self._systems.resident_id,
                "value": patient.resident_id,
            }
        return {"actor": actor, "status": "accepted"}

    # ----------------------------------------------------------------------------------
    # the HTTP core: breaker -> semaphore -> token bucket -> one attempt; retries
    # ----------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        op: str,
        ok: tuple[int, ...],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
        idempotent: bool = True,
    ) -> _Answer:
        config = self.config
        backoff = FullJitterBackoff(config.backoff_initial_s, config.backoff_max_s, self._rng)
        first = True
        async for attempt in stamina.retry_context(
            on=backoff,
            attempts=config.attempts if idempotent else 1,
            timeout=config.total_timeout_s,
            wait_initial=config.backoff_initial_s,
            wait_max=config.backoff_max_s,
            wait_jitter=0.0,
        ):
            with attempt:
                if not first:
                    self.stats.retries += 1
                first = False
                return await self._attempt(
                    method, url, op=op, ok=ok, body=body, headers=headers, missing_ok=missing_ok
                )
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        url: str,
        *,
        op: str,
        ok: tuple[int, ...],
        body: bytes | None,
        headers: Mapping[str, str] | None,
        missing_ok: bool,
    ) -> _Answer:
        started = time.monotonic()
        outcome = "unavailable"
        try:
            self.breaker.before_call()
        except HisUnavailableError:
            self._observe(op, started, "circuit_open")
            raise
        try:
            async with self._limit:
                await self._bucket.acquire()
                self.stats.attempts += 1
                self.stats.in_flight += 1
                started = time.monotonic()
                try:
                    answer = await self._send_authorized(method, url, body=body, headers=headers)
                finally:
                    self.stats.in_flight -= 1
            answer = self._judge(answer, ok=ok, missing_ok=missing_ok)
        except HisRefusedError:
            outcome = "refused"
            self.stats.refusals += 1
            self.breaker.record_success()
            raise
        except HisProtocolError:
            outcome = "protocol"
            self.stats.failures += 1
            self.breaker.record_failure()
            raise
        except HisUnavailableError:
            self.stats.failures += 1
            self.breaker.record_failure()
            raise
        except BaseException:
            outcome = "abandoned"
            self.breaker.record_abandoned()
            raise
        else:
            outcome = "not_found" if answer.status == 404 else "ok"
            self.breaker.record_success()
            return answer
        finally:
            self._observe(op, started, outcome)

    def _observe(self, op: str, started: float, outcome: str) -> None:
        if self._observer is not None:
            self._observer(op, time.monotonic() - started, outcome)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Accept": FHIR_JSON, "User-Agent": self.config.user_agent},
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency, ssl=self._ssl),
            )
            self._own_session = True
        return self._session

    def _reload_tls(self) -> None:
        """A rotated client certificate: new connections (a new session) use it; calls
        still running on the old session finish there."""
        if self._ssl_reload is None:
            return
        context = self._ssl_reload()
        if context is None:
            return
        self._ssl = context
        if self._session is not None and self._own_session:
            self._retired.append(self._session)
            self._session = None

    async def _send_authorized(
        self, method: str, url: str, *, body: bytes | None, headers: Mapping[str, str] | None
    ) -> _Answer:
        """One request with the bearer token; on 401 once more with a fresh token (the
        cached one expired early, was revoked, or the secret was rotated)."""
        self._reload_tls()
        if self.auth is None:
            return await self._send(method, url, body=body, headers=headers)
        session = self._session_now()
        token = await self.auth.token(session)
        answer = await self._send(method, url, body=body, headers=_bearer(headers, token))
        if answer.status != 401:
            return answer
        self.auth.invalidate(token)
        token = await self.auth.token(session)
        answer = await self._send(method, url, body=body, headers=_bearer(headers, token))
        if answer.status == 401:
            self.auth.invalidate(token)
            raise HisAuthError("the HIS refused a freshly issued token (401)")
        return answer

    async def _send(
        self, method: str, url: str, *, body: bytes | None, headers: Mapping[str, str] | None
    ) -> _Answer:
        config = self.config
        timeout = aiohttp.ClientTimeout(
            total=config.request_timeout_s, connect=config.connect_timeout_s
        )
        session = self._session_now()
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=dict(headers or {}),
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status >= 500 or status in (408, 429):
                    raise HisUnavailableError(
                        f"the HIS answered {status}",
                        http_status=status,
                        retry_after_s=_retry_after(response.headers.get("Retry-After")),
                    )
                raw = await _read_capped(response, config.max_response_bytes)
                content_type = response.content_type
        except TimeoutError as exc:
            raise HisUnavailableError(
                f"no answer from the HIS within {config.request_timeout_s} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise HisUnavailableError(f"HIS connection failed: {type(exc).__name__}") from exc
        if not raw:
            return _Answer(status, None)
        if content_type not in (FHIR_JSON, "application/json"):
            raise HisProtocolError(f"the HIS answered {status} with {content_type!r}")
        try:
            return _Answer(status, orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise HisProtocolError(f"the HIS answered {status} with invalid JSON") from exc

    def _judge(self, answer: _Answer, *, ok: tuple[int, ...], missing_ok: bool) -> _Answer:
        status = answer.status
        if status in ok:
            if answer.body is None:
                raise HisProtocolError(f"the HIS answered {status} without a body")
            return answer
        if status == 404 and missing_ok:
            return answer
        outcome = None
        if isinstance(answer.body, dict) and answer.body.get("resourceType") == "OperationOutcome":
            outcome = mapping.validate(answer.body, OperationOutcome)
        reason = mapping.refusal_of(outcome)
        detail = mapping.diagnostics_of(outcome)
        if 400 <= status < 500 and status not in (401, 403):
            if reason is None:
                reason = _REFUSAL_BY_STATUS.get(status, HisRefusal.OTHER)
            raise HisRefusedError(reason, detail, http_status=status)
        raise HisProtocolError(f"the HIS answered {status}: {detail or 'no detail'}")


_REFUSAL_BY_STATUS = {
    400: HisRefusal.INVALID,
    404: HisRefusal.NOT_FOUND,
    409: HisRefusal.CONFLICT,
    410: HisRefusal.NOT_FOUND,
    412: HisRefusal.CONFLICT,
    422: HisRefusal.INVALID,
}


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes (declared or actual)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise HisProtocolError(f"the HIS's answer is {declared} bytes, over {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise HisProtocolError(f"the HIS's answer is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(headers: Mapping[str, str] | None, token: str) -> dict[str, str]:
    return {**(headers or {}), "Authorization": f"Bearer {token}"}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from a HIS; back-off alone will do
    return seconds if seconds >= 0 else None


def _same_origin(url: str, base: str) -> bool:
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _path_id(value: str) -> str:
    """A logical id made safe for a URL path (FHIR ids are [A-Za-z0-9-.]{1,64})."""
    return urllib.parse.quote(value, safe="")
