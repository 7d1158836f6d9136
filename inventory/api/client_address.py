"""The client's address behind trusted proxies, for the per-address rate limit.

A proxy that *appends* to ``X-Forwarded-For`` (nginx's ``$proxy_add_x_forwarded_for``,
most load balancers) keeps whatever the client sent on the left, so the leftmost entry
is the client's to choose. Only the entries the trusted proxies wrote are believed: the
one ``hops`` places from the right, where ``hops`` is the number of trusted proxies in
front of the API (``INVENTORY_TRUSTED_PROXY_HOPS``). A proxy that *overwrites* the
header writes one entry, which is that same rightmost entry for one hop.

``Forwarded`` (RFC 7239) is read the same way, by its elements' ``for=`` parameters
(aiohttp's :attr:`~aiohttp.web.BaseRequest.forwarded` parses the syntax). Anything that
is not an IP address there (missing, fewer entries than hops, ``unknown``, an obfuscated
identifier, garbage) falls back to the peer address: a client can then at worst share
its proxy's bucket, never pick one of its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

FORWARDED = "forwarded"


def parse_ip(text: str) -> str | None:
    """``text`` as a normalised IP address, or None. Accepts what proxies write: a
    bare address, ``1.2.3.4:port``, ``[v6]`` and ``[v6]:port``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def trusted_entry(entries: Sequence[str], hops: int) -> str | None:
    """The address ``hops`` entries from the right, or None when there are fewer
    entries or that one is not an address."""
    if hops < 1 or len(entries) < hops:
        return None
    return parse_ip(entries[-hops])


def client_address(request: web.Request, header: str, hops: int) -> str:
    """The client's address: from ``header`` (``X-Forwarded-For``-style list or
    ``Forwarded``) as the trusted proxies wrote it, else the peer's."""
    if header:
        if header.lower() == FORWARDED:
            entries = [element.get("for", "") for element in request.forwarded]
        else:
            # Several header lines are one list, in order (RFC 9110 section 5.3).
            entries = [
                part for line in request.headers.getall(header, ()) for part in line.split(",")
            ]
        found = trusted_entry(entries, hops)
        if found is not None:
            return found
    return request.remote or "unknown"
