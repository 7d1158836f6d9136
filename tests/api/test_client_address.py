"""The client address behind trusted proxies (inventory/api/client_address.py): which
entry of ``X-Forwarded-For`` or ``Forwarded`` is believed, for each proxy style, and
that anything malformed falls back to the peer. The rate limit it feeds is tested
through HTTP in test_auth.py."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from inventory.api.client_address import client_address, parse_ip

PEER = "127.0.0.1"


def _address(headers: list[tuple[str, str]], header: str, hops: int = 1) -> str:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (PEER, 50000) if name == "peername" else default
    )
    request = make_mocked_request("GET", "/", headers=CIMultiDict(headers), transport=transport)
    return client_address(request, header, hops)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("192.0.2.7:4711", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0db8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("192.0.2.300", None),
        ("example.org", None),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    """Addresses as proxies write them are read and normalised; anything else is None."""
    assert parse_ip(text) == expected


def test_no_header_configured_is_the_peer() -> None:
    """Without a configured header a client's header is ignored."""
    assert _address([("X-Forwarded-For", "203.0.113.7")], "") == PEER


@pytest.mark.parametrize(
    ("values", "hops", "expected"),
    [
        (["198.51.100.1, 203.0.113.7"], 1, "203.0.113.7"),  # nginx appends: the right
        (["203.0.113.7"], 1, "203.0.113.7"),  # a proxy that overwrites
        (["198.51.100.1, 203.0.113.7, 10.0.0.2"], 2, "203.0.113.7"),  # two proxies
        (["198.51.100.1", "203.0.113.7"], 1, "203.0.113.7"),  # two header lines, one list
        (["203.0.113.7"], 2, PEER),  # fewer entries than trusted hops
        (["198.51.100.1, garbage"], 1, PEER),
        (["198.51.100.1, "], 1, PEER),
        ([""], 1, PEER),
    ],
)
def test_x_forwarded_for(values: list[str], hops: int, expected: str) -> None:
    """The entry ``hops`` from the right is the client; the left is the client's own
    text and never believed; malformed falls back to the peer."""
    headers = [("X-Forwarded-For", value) for value in values]
    assert _address(headers, "X-Forwarded-For", hops) == expected


@pytest.mark.parametrize(
    ("values", "hops", "expected"),
    [
        (["for=198.51.100.1, for=203.0.113.7"], 1, "203.0.113.7"),
        (['for=198.51.100.1;proto=https, for="[2001:db8:cafe::17]:4711"'], 1, "2001:db8:cafe::17"),
        (['for="203.0.113.7:8080";by=10.0.0.1'], 1, "203.0.113.7"),
        (["for=198.51.100.1", "for=203.0.113.7;proto=http"], 1, "203.0.113.7"),
        (["for=198.51.100.1, for=203.0.113.7, for=10.0.0.2"], 2, "203.0.113.7"),
        (["for=unknown"], 1, PEER),
        (["for=_gazonk"], 1, PEER),
        (["proto=https"], 1, PEER),
        (["for=203.0.113.7, garbage!!"], 1, PEER),
        (["for=203.0.113.7"], 2, PEER),
    ],
)
def test_forwarded(values: list[str], hops: int, expected: str) -> None:
    """RFC 7239 ``Forwarded``: the ``for=`` of the element ``hops`` from the right."""
    headers = [("Forwarded", value) for value in values]
    assert _address(headers, "Forwarded", hops) == expected
    assert _address(headers, "forwarded", hops) == expected
