"""The one interface every channel implements, and how a send can fail.

A channel sends one rendered message to one address with the delivery's idempotency key.
It returns the provider's message id, or raises:

* :class:`TransientSendError`: the provider is away or busy (network, timeout, 5xx,
  throttling): the delivery is tried again after a back-off;
* :class:`PermanentSendError`: the provider refused this message for a reason a retry
  cannot change (an unknown openid, a number that is not a mobile, a template that does
  not exist): the delivery is dead-lettered at once.

Addresses (openid, phone) are handed to :meth:`Channel.send` and nowhere else: neither
the errors' messages nor any log line carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from inventory.notify.templates import WeChatMessage


class SendError(Exception):
    """A send that did not succeed; ``code`` is a short stable reason (metrics, logs)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransientSendError(SendError):
    """Try again later."""


class PermanentSendError(SendError):
    """Do not try again: dead-letter it."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to go: its address, its text for SMS, its parts for WeChat."""

    address: str
    key: str
    sms_text: str = ""
    #: The SMS signature (签名) the text starts with.
    sms_sign: str = ""
    wechat: WeChatMessage | None = None


class Channel(Protocol):
    """A way to reach a patient."""

    @property
    def name(self) -> str:
        """``wechat`` or ``sms`` (the deliveries' channel column)."""
        ...

    async def send(self, message: Outgoing) -> str:
        """Send ``message``; the provider's message id. Raises :class:`SendError`."""
        ...

    async def close(self) -> None:
        """Release the HTTP session."""
        ...
