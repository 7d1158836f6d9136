"""Behind an ingress without a client header every patient shares one address in the
per-address reserve limit: the API warns once, at the first reserve from a loopback or
private address, when that limit is on and no header is set (and never otherwise)."""

from __future__ import annotations

import uuid

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from inventory.booking.ratelimit import ReserveRateLimiter, is_internal_address
from inventory.ops.config import RateLimit

from .conftest import ApiServer
from .helpers import uid

WARNING = "ratelimit.client_ip_header_missing"
ON = RateLimit(120, 60)
OFF = RateLimit(0, 1)


def _warnings(log_text: str) -> list[dict[str, object]]:
    found = []
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            # The shared API process may be writing its next line as the test reads the
            # file: a line cut short at the end is not a record yet.
            continue
        if record.get("event") == WARNING:
            found.append(record)
    return found


async def test_api_without_a_header_warns_once_at_the_first_loopback_reserve(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """The default API (limit on, no header) served from loopback writes the warning,
    naming the peer and the setting, exactly once however many reserves come."""
    assert not api_server.settings.client_ip_header
    assert api_server.settings.reserve_rate_per_ip.enabled
    for _ in range(3):
        async with http.post(
            api_server.url + "/v1/holds",
            json={"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"},
            headers=api_server.headers(uid("acct")) | {"Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            assert answer.status == 404, await answer.text()
    [warning] = _warnings(api_server.log_path.read_text(errors="replace"))
    assert warning["level"] == "warning"
    assert warning["peer"] == "127.0.0.1"
    assert "INVENTORY_CLIENT_IP_HEADER" in str(warning["detail"])


@pytest.mark.parametrize(
    ("per_ip", "header", "peers", "warned"),
    [
        (ON, "", ["1.1.1.1", "10.1.2.3", "10.1.2.4"], ["10.1.2.3"]),
        (ON, "", ["::1"], ["::1"]),
        (ON, "", ["9.9.9.9", "8.8.8.8"], []),
        (ON, "X-Forwarded-For", ["10.1.2.3"], []),
        (OFF, "", ["10.1.2.3"], []),
    ],
)
def test_the_warning_needs_the_limit_on_no_header_and_an_internal_peer(
    per_ip: RateLimit, header: str, peers: list[str], warned: list[str]
) -> None:
    """Only a limit that is on, with no header, seeing a private or loopback peer
    warns, and only the first time."""
    limiter = ReserveRateLimiter(
        None,  # type: ignore[arg-type]  # buckets() never calls the store
        per_account=ON,
        per_ip=per_ip,
        client_ip_header=header,
    )
    with capture_logs() as logs:
        for peer in peers:
            limiter.buckets(account_id="a", client_ip=peer)
    assert [log["peer"] for log in logs if log["event"] == WARNING] == warned


def test_internal_addresses() -> None:
    """Loopback, RFC 1918, unique local and link-local addresses are internal; public
    addresses and non-addresses are not."""
    internal = ["127.0.0.1", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fd00::1"]
    assert all(is_internal_address(a) for a in [*internal, "169.254.1.1", "fe80::1"])
    assert not any(is_internal_address(a) for a in ["8.8.8.8", "2001:4860::8888", "unknown"])
