"""Configuration: read from ``INVENTORY_*`` environment variables once, validated at
start-up, with every problem reported together. Secrets never appear in ``repr``.

Durations are seconds. See the configuration table in README.md for every setting.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from inventory.login.settings import LoginSettings, Rate
from inventory.notify.settings import NotifySettings, parse_templates, parse_wall_time
from inventory.payments.settings import PaymentSettings
from inventory.privacy.crypto import BlindIndex, FieldKeyring

T = TypeVar("T")

PREFIX = "INVENTORY_"


class ConfigError(Exception):
    """The environment does not describe a runnable service; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests per ``per_s`` seconds (a token bucket)."""

    count: int
    per_s: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"10/60"``: 10 per 60 seconds; ``"0/1"`` disables the limit."""
        count, _, per = text.partition("/")
        limit = cls(int(count), float(per))
        if limit.count < 0 or limit.per_s <= 0:
            raise ValueError("expected COUNT/SECONDS with COUNT >= 0 and SECONDS > 0")
        return limit

    @property
    def enabled(self) -> bool:
        return self.count > 0


class _EnvReader:
    """Reads ``INVENTORY_*`` variables: an unset or empty one is its default, and every
    value that does not parse is noted in ``problems`` (all reported together)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        """``PREFIX + name`` parsed, else ``default`` (and a problem if it did not parse)."""
        raw = self.env.get(PREFIX + name)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError) as error:
            self.problems.append(f"{PREFIX}{name}: {error}")
            return default


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or a positive integer")
    return value


def _port_or_zero(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number, or 0 for none")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _notify_window(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 3600:
        raise ValueError("must be 1-3600 seconds")
    return value


def _payment_settings(env: _EnvReader) -> PaymentSettings:
    """``INVENTORY_WECHAT_*`` and ``INVENTORY_PAYMENT_*`` (inventory/payments/settings.py
    says what each means and checks them together)."""
    get = env.get
    defaults = PaymentSettings()
    return PaymentSettings(
        mchid=get("WECHAT_MCHID", str, ""),
        appid=get("WECHAT_APPID", str, ""),
        apiv3_key=get("WECHAT_APIV3_KEY", str, ""),
        merchant_key=get("WECHAT_MERCHANT_KEY", str, ""),
        merchant_serial=get("WECHAT_MERCHANT_SERIAL", str, ""),
        platform_keys=get("WECHAT_PLATFORM_KEYS", str, ""),
        api_url=get("WECHAT_API_URL", str, defaults.api_url),
        notify_url=get("WECHAT_NOTIFY_URL", str, ""),
        partner=get("WECHAT_PARTNER", _boolean, False),
        notify_window_s=get("PAYMENT_NOTIFY_WINDOW_S", _notify_window, defaults.notify_window_s),
        loop_interval_s=get("PAYMENT_LOOP_INTERVAL_S", _positive_float, defaults.loop_interval_s),
        close_grace_s=get("PAYMENT_CLOSE_GRACE_S", _positive_float, defaults.close_grace_s),
        run_loops=get("PAYMENT_LOOPS", _boolean, True),
    )


def _notify_settings(env: _EnvReader) -> NotifySettings:
    """``INVENTORY_NOTIFY_*`` (inventory/notify/settings.py says what each means and checks
    them together)."""
    get = env.get
    defaults = NotifySettings()
    return NotifySettings(
        wechat_url=get("NOTIFY_WECHAT_URL", str, ""),
        wechat_appid=get("NOTIFY_WECHAT_APPID", str, ""),
        wechat_secret=get("NOTIFY_WECHAT_SECRET", str, ""),
        wechat_templates=get("NOTIFY_WECHAT_TEMPLATES", parse_templates, defaults.wechat_templates),
        sms_url=get("NOTIFY_SMS_URL", str, ""),
        sms_api_key=get("NOTIFY_SMS_API_KEY", str, ""),
        sms_sign=get("NOTIFY_SMS_SIGN", str, defaults.sms_sign),
        interval_s=get("NOTIFY_INTERVAL_S", _positive_float, defaults.interval_s),
        lease_s=get("NOTIFY_LEASE_S", _positive_float, defaults.lease_s),
        max_attempts=get("NOTIFY_MAX_ATTEMPTS", _positive_int, defaults.max_attempts),
        retry_initial_s=get("NOTIFY_RETRY_INITIAL_S", _positive_float, defaults.retry_initial_s),
        retry_max_s=get("NOTIFY_RETRY_MAX_S", _positive_float, defaults.retry_max_s),
        reminder_time=get("NOTIFY_REMINDER_TIME", parse_wall_time, defaults.reminder_time),
        call_timeout_s=get("NOTIFY_CALL_TIMEOUT_S", _positive_float, defaults.call_timeout_s),
        scan_interval_s=get("NOTIFY_SCAN_INTERVAL_S", _positive_float, defaults.scan_interval_s),
    )


def _rate(text: str) -> Rate:
    limit = RateLimit.parse(text)
    return Rate(limit.count, limit.per_s)


def _one_key(text: str) -> bytes:
    """``id:base64`` (one key of at least 32 bytes, as :func:`_parse_keys` reads them)."""
    keys = _parse_keys(text)
    if len(keys) != 1:
        raise ValueError("expected exactly one KEY_ID:BASE64 key")
    return next(iter(keys.values()))


def _login_settings(env: _EnvReader) -> LoginSettings:
    """The login settings (inventory/login/settings.py says what each means)."""
    get = env.get
    d = LoginSettings()
    return LoginSettings(
        wechat_appid=get("WECHAT_APPID", str, ""),
        wechat_app_secret=get("WECHAT_APP_SECRET", str, ""),
        wechat_login_url=get("WECHAT_LOGIN_URL", str, d.wechat_login_url),
        sms_url=get("SMS_URL", str, ""),
        sms_api_key=get("SMS_API_KEY", str, ""),
        sms_sign=get("SMS_SIGN", str, d.sms_sign),
        sms_code_key=get("SMS_CODE_KEY", _one_key, b""),
        access_token_ttl_s=get("ACCESS_TOKEN_TTL_S", _positive_int, d.access_token_ttl_s),
        refresh_token_ttl_s=get("REFRESH_TOKEN_TTL_S", _positive_int, d.refresh_token_ttl_s),
        session_max_s=get("LOGIN_SESSION_MAX_S", _positive_int, d.session_max_s),
        sms_code_ttl_s=get("SMS_CODE_TTL_S", _positive_int, d.sms_code_ttl_s),
        sms_code_max_failures=get("SMS_CODE_MAX_FAILURES", _positive_int, d.sms_code_max_failures),
        sms_lock_s=get("SMS_LOCK_S", _positive_int, d.sms_lock_s),
        sms_resend_s=get("SMS_RESEND_S", _non_negative_int, d.sms_resend_s),
        sms_rate_per_phone=get("SMS_RATE_PER_PHONE", _rate, d.sms_rate_per_phone),
        sms_rate_per_ip=get("SMS_RATE_PER_IP", _rate, d.sms_rate_per_ip),
        login_rate_per_ip=get("LOGIN_RATE_PER_IP", _rate, d.login_rate_per_ip),
        staff_token_ttl_s=get("STAFF_TOKEN_TTL_S", _positive_int, d.staff_token_ttl_s),
        staff_max_failures=get("STAFF_MAX_FAILURES", _positive_int, d.staff_max_failures),
        staff_lock_s=get("STAFF_LOCK_S", _positive_int, d.staff_lock_s),
        staff_rate_per_ip=get("STAFF_LOGIN_RATE_PER_IP", _rate, d.staff_rate_per_ip),
    )


def _parse_keys(text: str) -> dict[str, bytes]:
    """``kid:base64,kid2:base64`` (urlsafe or standard base64, at least 32 bytes each)."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, material = item.partition(":")
        if not sep or not kid:
            raise ValueError("expected KEY_ID:BASE64 pairs separated by commas")
        if kid in keys:
            raise ValueError(f"key id {kid!r} appears twice")
        padded = material + "=" * (-len(material) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        except ValueError as error:
            raise ValueError(f"key {kid!r} is not base64") from error
        if len(raw) < 32:
            raise ValueError(f"key {kid!r} must be at least 32 bytes")
        keys[kid] = raw
    return keys


def _reconcile_policy(text: str) -> str:
    """A reconciliation policy (inventory.his.reconcile.ReconcilePolicy.parse), kept as
    written once it parses."""
    from inventory.his.reconcile import ReconcilePolicy

    ReconcilePolicy.parse(text)
    return text


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 5.0
    #: Script calls share one auto-pipelined connection per process
    #: (inventory/store/autopipeline.py); redis://, unix:// and redis+sentinel://, not on Cluster.
    redis_autopipeline: bool = True
    database_url: str = field(default="postgresql://127.0.0.1:5432/inventory", repr=False)
    database_pool_max: int = 10

    host: str = "127.0.0.1"
    port: int = 8080
    #: One JSON access-log line per request (its cost per reserve: docs/benchmarks.md);
    #: off when the ingress already logs requests. Metrics are kept either way.
    access_log: bool = True
    timezone: str = "Asia/Shanghai"

    jwt_issuer: str = "slot-inventory"
    jwt_audience: str = "slot-inventory-api"
    #: HS256 keys by key id; the current one signs `inventory token`, all verify.
    jwt_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    jwt_current_key: str = ""
    jwt_leeway_s: int = 30

    #: Field-encryption keys, ``id:base64,...``, and the id that encrypts new rows.
    field_keys: str = field(default="", repr=False)
    field_current_key: str = ""
    #: The blind-index key, ``id:base64`` (kept apart from the field keys).
    blind_index_key: str = field(default="", repr=False)

    #: Requests in flight per process; past it, 503 with Retry-After.
    max_in_flight: int = 512
    #: Open connections per process; past it a new one is closed at once (0: the
    #: open-file limit less 512, the files kept for the process's own connections).
    max_connections: int = 0
    #: The shortest ``Retry-After`` of an ``overloaded`` answer, and its bound: drawn at
    #: random between them, wider the more the process sheds (inventory/api/admission.py).
    retry_after_s: int = 1
    retry_after_max_s: int = 30
    reserve_rate_per_account: RateLimit = field(default_factory=lambda: RateLimit(20, 60))
    reserve_rate_per_ip: RateLimit = field(default_factory=lambda: RateLimit(120, 60))
    #: Header naming the client address behind a trusted proxy ("" = use the peer).
    client_ip_header: str = ""
    #: Proxies in front of the API that write the client header: the client is the
    #: entry this many hops from the right (the part no client can write).
    trusted_proxy_hops: int = 1
    #: A schedule's availability is cached this long per process, and a slot the
    #: process saw sold out is refused this long without asking Redis (0: neither).
    availability_cache_s: float = 0.5
    expire_interval_s: float = 1.0
    #: How often the worker moves every waiting room forward (draw, admit, sell out).
    room_tick_interval_s: float = 0.2
    #: The HIS's FHIR base URL; empty: no HIS flows (sync, submitter, reconciler). With
    #: a connections file, the default connection (hospitals without their own).
    his_url: str = ""
    #: A TOML file of per-hospital HIS connections (docs/his.md, "Connections").
    his_connections: str = ""
    his_sync_interval_s: float = 60.0
    #: Visit dates the sync and the reconciler cover, from today.
    his_booking_window_days: int = 14
    reconcile_interval_s: float = 300.0
    #: Kinds the reconciler fixes by itself (docs/his.md, "Reconciliation").
    reconcile_policy: str = "default"
    #: Refuse state changes on a Redis server the fence has not yet compared with
    #: Postgres since it started (see inventory/recovery/fence.py).
    require_verified_store: bool = True
    fence_interval_s: float = 1.0
    max_body_bytes: int = 16 * 1024
    #: The worker's /metrics port (on ``host``); 0 serves none.
    worker_metrics_port: int = 9101
    #: /readyz (API and worker) fails above this many outbox entries waiting.
    ready_max_outbox_backlog: int = 50_000
    #: WeChat Pay (inventory/payments/settings.py); off without a merchant id.
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    #: Notifications (inventory/notify/settings.py); off without a channel URL.
    notify: NotifySettings = field(default_factory=NotifySettings)
    #: The WeChat Pay simulator's address, for the patient app's dev cashier ("" outside
    #: dev: the app pays through WeChat's own bridge).
    app_pay_simulator_url: str = ""
    #: Patients' login (inventory/login/settings.py); each method off until configured.
    login: LoginSettings = field(default_factory=LoginSettings)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, for_api: bool = True
    ) -> Settings:
        """Build from ``INVENTORY_*`` variables; :class:`ConfigError` lists every problem.

        ``for_api=False`` (worker, rebuild, check) does not ask for the API's keys."""
        env = _EnvReader(os.environ if environ is None else environ)
        get = env.get
        defaults = cls()
        settings = cls(
            redis_url=get("REDIS_URL", str, defaults.redis_url),
            redis_cluster=get("REDIS_CLUSTER", _boolean, False),
            redis_max_connections=get("REDIS_MAX_CONNECTIONS", _positive_int, 64),
            redis_pool_timeout_s=get("REDIS_POOL_TIMEOUT_S", _positive_float, 5.0),
            redis_autopipeline=get("REDIS_AUTOPIPELINE", _boolean, True),
            database_url=get("DATABASE_URL", str, defaults.database_url),
            database_pool_max=get("DATABASE_POOL_MAX", _positive_int, 10),
            access_log=get("ACCESS_LOG", _boolean, True),
            host=get("HOST", str, defaults.host),
            port=get("PORT", _positive_int, defaults.port),
            timezone=get("TIMEZONE", str, defaults.timezone),
            jwt_issuer=get("JWT_ISSUER", str, defaults.jwt_issuer),
            jwt_audience=get("JWT_AUDIENCE", str, defaults.jwt_audience),
            jwt_keys=get("JWT_KEYS", _parse_keys, {}),
            jwt_current_key=get("JWT_CURRENT_KEY", str, ""),
            jwt_leeway_s=get("JWT_LEEWAY_S", int, 30),
            field_keys=get("FIELD_KEYS", str, ""),
            field_current_key=get("FIELD_CURRENT_KEY", str, ""),
            blind_index_key=get("BLIND_INDEX_KEY", str, ""),
            max_in_flight=get("MAX_IN_FLIGHT", _positive_int, defaults.max_in_flight),
            max_connections=get("MAX_CONNECTIONS", _non_negative_int, defaults.max_connections),
            retry_after_s=get("RETRY_AFTER_S", _positive_int, defaults.retry_after_s),
            retry_after_max_s=get("RETRY_AFTER_MAX_S", _positive_int, defaults.retry_after_max_s),
            reserve_rate_per_account=get(
                "RESERVE_RATE_PER_ACCOUNT", RateLimit.parse, defaults.reserve_rate_per_account
            ),
            reserve_rate_per_ip=get(
                "RESERVE_RATE_PER_IP", RateLimit.parse, defaults.reserve_rate_per_ip
            ),
            client_ip_header=get("CLIENT_IP_HEADER", str, ""),
            trusted_proxy_hops=get("TRUSTED_PROXY_HOPS", _positive_int, 1),
            availability_cache_s=get("AVAILABILITY_CACHE_S", float, 0.5),
            expire_interval_s=get("EXPIRE_INTERVAL_S", _positive_float, 1.0),
            room_tick_interval_s=get("ROOM_TICK_INTERVAL_S", _positive_float, 0.2),
            his_url=get("HIS_URL", str, ""),
            his_connections=get("HIS_CONNECTIONS", str, ""),
            his_sync_interval_s=get("HIS_SYNC_INTERVAL_S", _positive_float, 60.0),
            his_booking_window_days=get("HIS_BOOKING_WINDOW_DAYS", _positive_int, 14),
            reconcile_interval_s=get("RECONCILE_INTERVAL_S", _positive_float, 300.0),
            reconcile_policy=get("RECONCILE_POLICY", _reconcile_policy, "default"),
            require_verified_store=get("REQUIRE_VERIFIED_STORE", _boolean, True),
            fence_interval_s=get("FENCE_INTERVAL_S", _positive_float, 1.0),
            max_body_bytes=get("MAX_BODY_BYTES", _positive_int, defaults.max_body_bytes),
            worker_metrics_port=get("WORKER_METRICS_PORT", _port_or_zero, 9101),
            ready_max_outbox_backlog=get(
                "READY_MAX_OUTBOX_BACKLOG", _positive_int, defaults.ready_max_outbox_backlog
            ),
            payments=_payment_settings(env),
            notify=_notify_settings(env),
            app_pay_simulator_url=get("APP_PAY_SIMULATOR_URL", str, ""),
            login=_login_settings(env),
        )
        problems = env.problems
        if (
            "," in settings.redis_url
            and not settings.redis_cluster
            and not settings.redis_sentinel  # a Sentinel URL lists its Sentinels
        ):
            problems.append(
                f"{PREFIX}REDIS_URL: several URLs name a Cluster's start-up nodes; "
                f"set {PREFIX}REDIS_CLUSTER=true or give one URL"
            )
        problems += settings.redis_problems()
        problems += settings.notify.problems()
        if for_api:
            problems += settings.problems()
        if problems:
            raise ConfigError(problems)
        return settings

    @property
    def redis_sentinel(self) -> bool:
        """Whether ``redis_url`` reaches Redis through Sentinel (``redis+sentinel://``)."""
        # The scheme inventory.store.connection.SENTINEL_SCHEME names, read without importing
        # redis-py (reading the configuration should not load it).
        return urlsplit(self.redis_url).scheme == "redis+sentinel"

    @property
    def his_enabled(self) -> bool:
        """Whether any HIS is connected (the default connection or a hospital's own)."""
        return bool(self.his_url or self.his_connections)

    def redis_problems(self) -> list[str]:
        """What is wrong with the Redis settings (every process needs Redis)."""
        if not self.redis_sentinel:
            return []
        from inventory.store.connection import parse_sentinel_url

        found: list[str] = []
        try:
            parse_sentinel_url(self.redis_url)
        except ValueError as error:
            found.append(f"{PREFIX}REDIS_URL: {error}")
        if self.redis_cluster:
            found.append(
                f"{PREFIX}REDIS_CLUSTER: a redis+sentinel:// URL names one primary, not a Cluster"
            )
        return found

    def problems(self) -> list[str]:
        """What is missing or inconsistent for running the API."""
        found: list[str] = []
        if not self.jwt_keys:
            found.append(f"{PREFIX}JWT_KEYS: at least one signing key is required")
        elif self.jwt_current_key and self.jwt_current_key not in self.jwt_keys:
            found.append(f"{PREFIX}JWT_CURRENT_KEY: {self.jwt_current_key!r} is not in JWT_KEYS")
        try:
            self.keyring()
        except ValueError as error:
            found.append(f"{PREFIX}FIELD_KEYS / FIELD_CURRENT_KEY: {error}")
        try:
            self.blind_index()
        except ValueError as error:
            found.append(f"{PREFIX}BLIND_INDEX_KEY: {error}")
        else:
            # One key for two jobs would let whoever holds a field key brute-force the
            # index offline (and the reverse): refuse material shared between them.
            field_material = (
                set(_parse_keys(self.field_keys).values()) if self.field_keys else set()
            )
            if field_material & set(_parse_keys(self.blind_index_key).values()):
                found.append(f"{PREFIX}BLIND_INDEX_KEY: must differ from every field key")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append(f"{PREFIX}TIMEZONE: unknown time zone {self.timezone!r}")
        found += self.payments.problems()
        found += self.login.problems()
        return found

    def keyring(self) -> FieldKeyring:
        """The field-encryption keyring (ValueError when misconfigured)."""
        if not self.field_keys:
            raise ValueError("at least one field-encryption key is required")
        return FieldKeyring.from_config(self.field_keys, self.field_current_key)

    def blind_index(self) -> BlindIndex:
        """The blind index for look-ups by ID number (ValueError when misconfigured)."""
        if not self.blind_index_key:
            raise ValueError("a blind-index key (id:base64) is required")
        return BlindIndex.from_config(self.blind_index_key)

    @property
    def signing_key_id(self) -> str:
        """The key id that signs new tokens."""
        return self.jwt_current_key or next(iter(self.jwt_keys))
