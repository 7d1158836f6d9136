"""Payment settings: the merchant's WeChat Pay identity and keys, read with the rest of
:class:`inventory.ops.config.Settings` (``Settings.payments``) from ``INVENTORY_*`` variables
(that module alone reads the environment; this one says what is valid).

Payments are off while ``INVENTORY_WECHAT_MCHID`` is empty. The APIv3 key and the
merchant private key never appear in ``repr`` or logs. Keys are given as base64 of their
DER form (PKCS#8 for the private key, SubjectPublicKeyInfo for public keys) or as PEM text.

- ``WECHAT_MCHID``, ``WECHAT_APPID``: our merchant id and the app (mini-program) id;
- ``WECHAT_PARTNER`` (false): partner mode (服务商): the two above are the platform's
  sp_mchid and sp_appid, and each hospital's fees settle to its own sub-merchant
  (``PUT /v1/operator/hospitals/{id}/merchant``);
- ``WECHAT_APIV3_KEY``: the APIv3 key (32 bytes), decrypting notification resources;
- ``WECHAT_MERCHANT_KEY``, ``WECHAT_MERCHANT_SERIAL``: our private key and its certificate
  serial, signing API requests and the JSAPI ``paySign``;
- ``WECHAT_PLATFORM_KEYS``: ``serial:key,serial:key``, WeChat Pay's public keys by serial
  (the ``Wechatpay-Serial`` header picks one);
- ``WECHAT_API_URL``: the API base URL (the pay simulator's in tests);
- ``WECHAT_NOTIFY_URL``: where WeChat Pay posts notifications (our
  ``/v1/payments/wechat/notify``);
- ``PAYMENT_NOTIFY_WINDOW_S`` (300): accepted clock difference of a notification;
- ``PAYMENT_LOOP_INTERVAL_S`` (1.0): how often the payment and refund loops run;
- ``PAYMENT_CLOSE_GRACE_S`` (5.0): how long after a hold's deadline its unpaid order closes;
- ``PAYMENT_LOOPS`` (true): run the loops in this process.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    load_der_private_key,
    load_der_public_key,
    load_pem_private_key,
    load_pem_public_key,
)

#: WeChat Pay's APIv3 key is 32 bytes (AES-256).
APIV3_KEY_BYTES = 32


def _key_bytes(text: str) -> tuple[bytes, bool]:
    """(material, is_pem) of a key given as PEM text or base64 DER."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return stripped.replace("\\n", "\n").encode(), True
    try:
        return base64.b64decode(stripped, validate=True), False
    except (binascii.Error, ValueError) as error:
        raise ValueError("not PEM and not base64") from error


def load_private_key(text: str) -> RSAPrivateKey:
    """An RSA private key from PEM text or base64 PKCS#8 DER (ValueError otherwise)."""
    material, pem = _key_bytes(text)
    try:
        key = (
            load_pem_private_key(material, password=None)
            if pem
            else load_der_private_key(material, password=None)
        )
    except (ValueError, TypeError) as error:
        raise ValueError("not an RSA private key") from error
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(text: str) -> RSAPublicKey:
    """An RSA public key from PEM text or base64 SubjectPublicKeyInfo DER."""
    material, pem = _key_bytes(text)
    try:
        key = load_pem_public_key(material) if pem else load_der_public_key(material)
    except (ValueError, TypeError) as error:
        raise ValueError("not an RSA public key") from error
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def parse_public_keys(text: str) -> dict[str, RSAPublicKey]:
    """``serial:key,serial:key`` -> public keys by serial."""
    found: dict[str, RSAPublicKey] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        serial, sep, material = item.partition(":")
        if not sep or not serial:
            raise ValueError("expected SERIAL:KEY pairs separated by commas")
        if serial in found:
            raise ValueError(f"serial {serial!r} appears twice")
        try:
            found[serial] = load_public_key(material)
        except ValueError as error:
            raise ValueError(f"key of serial {serial!r}: {error}") from None
    return found


@dataclass(frozen=True)
class PaymentSettings:
    """The payments part of the service's settings (see the module docstring)."""

    mchid: str = ""
    appid: str = ""
    apiv3_key: str = field(default="", repr=False)
    merchant_key: str = field(default="", repr=False)
    merchant_serial: str = ""
    platform_keys: str = field(default="", repr=False)
    api_url: str = "https://api.mch.weixin.qq.com"
    notify_url: str = ""
    notify_window_s: int = 300
    loop_interval_s: float = 1.0
    close_grace_s: float = 5.0
    run_loops: bool = True
    #: The order description the payer sees.
    description: str = "挂号费"
    #: WeChat Pay partner mode (服务商): ``mchid``/``appid`` are the platform's sp_mchid and
    #: sp_appid, and each hospital's fees go to its own sub-merchant (hospital_merchants).
    partner: bool = False

    @property
    def enabled(self) -> bool:
        """Payments are on (a merchant id is configured)."""
        return bool(self.mchid)

    def problems(self) -> list[str]:
        """What is missing or wrong for taking payments (nothing when payments are off)."""
        if not self.enabled:
            return []
        found: list[str] = []
        p = "INVENTORY_"
        if not self.appid:
            found.append(f"{p}WECHAT_APPID: required with WECHAT_MCHID")
        if len(self.apiv3_key.encode()) != APIV3_KEY_BYTES:
            found.append(f"{p}WECHAT_APIV3_KEY: must be {APIV3_KEY_BYTES} bytes")
        try:
            self.merchant_private_key()
        except ValueError as error:
            found.append(f"{p}WECHAT_MERCHANT_KEY: {error}")
        if not self.merchant_serial:
            found.append(f"{p}WECHAT_MERCHANT_SERIAL: required with WECHAT_MCHID")
        try:
            if not self.platform_public_keys():
                found.append(f"{p}WECHAT_PLATFORM_KEYS: at least one SERIAL:KEY is required")
        except ValueError as error:
            found.append(f"{p}WECHAT_PLATFORM_KEYS: {error}")
        for name, url in (("WECHAT_API_URL", self.api_url), ("WECHAT_NOTIFY_URL", self.notify_url)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                found.append(f"{p}{name}: must be an http(s) URL")
        return found

    def merchant_private_key(self) -> RSAPrivateKey:
        """Our private key (ValueError when missing or broken)."""
        if not self.merchant_key:
            raise ValueError("required with WECHAT_MCHID")
        return load_private_key(self.merchant_key)

    def platform_public_keys(self) -> dict[str, RSAPublicKey]:
        """WeChat Pay's public keys by serial (ValueError when broken)."""
        return parse_public_keys(self.platform_keys)
