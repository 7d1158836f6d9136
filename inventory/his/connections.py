"""Each hospital's HIS connection: where its HIS is, which protocol it speaks, how we
prove who we are, how hard we may press it, and how often we sync and reconcile.

Configuration (docs/his.md, "Connections"): a TOML file named by
``INVENTORY_HIS_CONNECTIONS``, one ``[hospitals.<hospital id>]`` table per hospital with
a HIS of its own, and an optional ``[default]`` table for the connection of every other
hospital. ``INVENTORY_HIS_URL`` alone still works: it is the default connection, without
credentials. Secrets are never written in the file, only where to find them
(``*_file`` or ``*_env``); a file's relative paths are relative to the file.

A connection becomes a client through its protocol adapter (:data:`ADAPTERS`: ``fhir-r4``
today); a new protocol is a new adapter returning a :class:`~inventory.his.client.HisClient`.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from inventory.his.auth import AUTH_METHODS, TokenAuth, TokenAuthConfig
from inventory.his.client import FhirHisClient, HisCallObserver, HisClient, HisClientConfig
from inventory.his.errors import HisAuthError
from inventory.his.resilience import BreakerState
from inventory.his.scope import HospitalScope
from inventory.his.secrets import SecretSource

__all__ = [
    "ADAPTERS",
    "DEFAULT",
    "ConnectionsError",
    "HisConnection",
    "HisConnections",
    "HospitalScope",
    "ReloadingTls",
    "TlsFiles",
    "load_connections",
]

#: The name of the default connection (metrics label, loop names, logs).
DEFAULT = "default"
_HOSPITAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The client limits a connection may set (HisClientConfig's fields of the same name).
_LIMITS = (
    "connect_timeout_s",
    "request_timeout_s",
    "total_timeout_s",
    "attempts",
    "max_concurrency",
    "rate_per_s",
    "burst",
    "breaker_failures",
    "breaker_cooldown_s",
    "page_size",
)
_CONNECTION_KEYS = frozenset(
    {"base_url", "adapter", "sync_interval_s", "reconcile_interval_s", "auth", "tls", *_LIMITS}
)
_AUTH_KEYS = frozenset(
    {
        "method",
        "token_url",
        "client_id",
        "client_secret_file",
        "client_secret_env",
        "private_key_file",
        "private_key_env",
        "key_id",
        "algorithm",
        "scope",
        "audience",
        "refresh_margin_s",
    }
)
_TLS_KEYS = frozenset({"client_cert_file", "client_key_file", "ca_file"})


class ConnectionsError(ValueError):
    """The connections configuration is wrong; the message says where."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A CA bundle to trust the HIS by, and the client certificate for mutual TLS."""

    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context verifying the HIS (by ``ca_file`` or the system's CAs) and
        presenting the client certificate when one is given."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.client_cert_file is not None:
            context.load_cert_chain(
                str(self.client_cert_file),
                str(self.client_key_file) if self.client_key_file is not None else None,
            )
        return context

    def stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        """The files' identities (inode, size, modification time): a change is a rotation."""
        found: list[tuple[int, int, int] | None] = []
        for path in (self.ca_file, self.client_cert_file, self.client_key_file):
            try:
                stat = path.stat() if path is not None else None
            except OSError:
                stat = None
            found.append((stat.st_ino, stat.st_size, stat.st_mtime_ns) if stat else None)
        return tuple(found)


class ReloadingTls:
    """The SSL context of :class:`TlsFiles`, made again when a file changes, so a client
    certificate (or CA bundle) rotated on disk is used without a restart. A change that
    does not load (a half-written file) keeps the previous context until it does."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.context = files.context()
        self._stamp = files.stamp()
        #: How many times the context was made again.
        self.reloads = 0

    def changed(self) -> ssl.SSLContext | None:
        """The new context when the files changed (and load), else None."""
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return None
        try:
            context = self.files.context()
        except (OSError, ssl.SSLError):
            return None
        self.context, self._stamp = context, stamp
        self.reloads += 1
        return context


@dataclass(frozen=True, slots=True)
class HisConnection:
    """One HIS connection. ``hospital_id`` None: the default connection."""

    name: str
    hospital_id: str | None
    client: HisClientConfig
    adapter: str = "fhir-r4"
    auth: TokenAuthConfig | None = None
    tls: TlsFiles | None = None
    #: None: the deployment's INVENTORY_HIS_SYNC_INTERVAL_S / INVENTORY_RECONCILE_INTERVAL_S.
    sync_interval_s: float | None = None
    reconcile_interval_s: float | None = None

    @property
    def base_url(self) -> str:
        """The HIS's base URL."""
        return self.client.base_url

    def build(
        self,
        *,
        observer: HisCallObserver | None = None,
        on_breaker_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> HisClient:
        """A client for this connection, through its protocol adapter."""
        return ADAPTERS[self.adapter](self, observer, on_breaker_change)


@dataclass(frozen=True, slots=True)
class HisConnections:
    """The default connection (if any) and each hospital's own."""

    default: HisConnection | None = None
    hospitals: Mapping[str, HisConnection] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.hospitals)

    def all(self) -> list[HisConnection]:
        """Every connection, the default first."""
        found = [self.default] if self.default is not None else []
        return found + [self.hospitals[h] for h in sorted(self.hospitals)]

    @property
    def names(self) -> list[str]:
        """Every connection's name: bounded by this configuration (a metrics label)."""
        return [c.name for c in self.all()]

    def scope(self, connection: HisConnection) -> HospitalScope:
        """The hospitals ``connection`` serves."""
        if connection.hospital_id is not None:
            return HospitalScope(only=(connection.hospital_id,))
        return HospitalScope(but=tuple(sorted(self.hospitals)))

    def for_hospital(self, hospital_id: str) -> HisConnection | None:
        """The connection serving ``hospital_id`` (its own, else the default)."""
        return self.hospitals.get(hospital_id, self.default)

    def name_for(self, hospital_id: str) -> str:
        """The name of the connection serving ``hospital_id``; ``none`` without one."""
        connection = self.for_hospital(hospital_id)
        return connection.name if connection is not None else "none"


# -- the adapters ------------------------------------------------------------------------


def _fhir_r4(
    connection: HisConnection,
    observer: HisCallObserver | None,
    on_breaker_change: Callable[[BreakerState, BreakerState], None] | None,
) -> HisClient:
    tls = ReloadingTls(connection.tls) if connection.tls is not None else None
    return FhirHisClient(
        connection.client,
        observer=observer,
        on_breaker_change=on_breaker_change,
        auth=TokenAuth(connection.auth) if connection.auth is not None else None,
        ssl_context=tls.context if tls is not None else None,
        ssl_reload=tls.changed if tls is not None else None,
    )


#: Protocol adapters by name: each makes a HisClient of a connection.
ADAPTERS: dict[
    str,
    Callable[
        [
            HisConnection,
            HisCallObserver | None,
            Callable[[BreakerState, BreakerState], None] | None,
        ],
        HisClient,
    ],
] = {"fhir-r4": _fhir_r4}


# -- loading -----------------------------------------------------------------------------


def load_connections(
    path: str | Path | None,
    *,
    default_url: str = "",
    environ: Mapping[str, str] | None = None,
) -> HisConnections:
    """The connections of ``path`` (a TOML file; None or "" for none) with
    ``default_url`` (INVENTORY_HIS_URL) as the default connection's base unless the file
    has a ``[default]`` of its own. Every secret named is read once here, so a missing
    one is refused at start-up rather than at the first call."""
    data: dict[str, Any] = {}
    where = Path(path) if path else None
    if where is not None:
        try:
            data = tomllib.loads(where.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConnectionsError(f"{where}: cannot be read ({type(error).__name__})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConnectionsError(f"{where}: not valid TOML: {error}") from None
    unknown = set(data) - {"default", "hospitals"}
    if unknown:
        raise ConnectionsError(f"{where}: unknown tables {sorted(unknown)}")
    base = where.parent if where is not None else Path.cwd()
    default: HisConnection | None = None
    if "default" in data:
        default = _connection(
            DEFAULT, None, _table(data["default"], "[default]"), base, default_url, environ
        )
    elif default_url:
        default = HisConnection(DEFAULT, None, _client_config(DEFAULT, {}, default_url))
    hospitals: dict[str, HisConnection] = {}
    for hospital, table in _table(data.get("hospitals", {}), "[hospitals]").items():
        if not _HOSPITAL_ID.match(hospital) or hospital == DEFAULT:
            raise ConnectionsError(f"[hospitals.{hospital}]: not a valid hospital id")
        hospitals[hospital] = _connection(
            hospital,
            hospital,
            _table(table, f"[hospitals.{hospital}]"),
            base,
            "",
            environ,
        )
    return HisConnections(default, hospitals)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConnectionsError(f"{where}: must be a table")
    return value


def _connection(
    name: str,
    hospital_id: str | None,
    table: dict[str, Any],
    base: Path,
    default_url: str,
    environ: Mapping[str, str] | None,
) -> HisConnection:
    where = f"[{'hospitals.' + name if hospital_id else name}]"
    unknown = set(table) - _CONNECTION_KEYS
    if "client_secret" in unknown or "private_key" in unknown:
        raise ConnectionsError(
            f"{where}: secrets are never written in this file; "
            "name a file (*_file) or an environment variable (*_env)"
        )
    if unknown:
        raise ConnectionsError(f"{where}: unknown keys {sorted(unknown)}")
    url = str(table.get("base_url") or default_url)
    if not url:
        raise ConnectionsError(f"{where}: base_url is required")
    adapter = str(table.get("adapter", "fhir-r4"))
    if adapter not in ADAPTERS:
        raise ConnectionsError(f"{where}: adapter must be one of {sorted(ADAPTERS)}")
    auth = (
        _auth(where, _table(table["auth"], f"{where}.auth"), base, environ)
        if ("auth" in table)
        else None
    )
    tls = _tls(where, _table(table["tls"], f"{where}.tls"), base) if "tls" in table else None
    intervals: dict[str, float] = {}
    for key in ("sync_interval_s", "reconcile_interval_s"):
        if key in table:
            intervals[key] = _number(where, key, table[key])
            if intervals[key] <= 0:
                raise ConnectionsError(f"{where}: {key} must be positive")
    return HisConnection(
        name,
        hospital_id,
        _client_config(where, table, url),
        adapter=adapter,
        auth=auth,
        tls=tls,
        sync_interval_s=intervals.get("sync_interval_s"),
        reconcile_interval_s=intervals.get("reconcile_interval_s"),
    )


def _client_config(where: str, table: dict[str, Any], url: str) -> HisClientConfig:
    types = {f.name: f.type for f in fields(HisClientConfig)}
    limits: dict[str, Any] = {}
    for key in _LIMITS:
        if key in table:
            value = _number(where, key, table[key])
            limits[key] = int(value) if types[key] in ("int", int) else float(value)
    try:
        return replace(HisClientConfig(base_url=url), **limits)
    except ValueError as error:
        raise ConnectionsError(f"{where}: {error}") from None


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConnectionsError(f"{where}: {key} must be a number")
    return float(value)


def _path(base: Path, value: Any, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConnectionsError(f"{where}: {key} must be a path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _secret(
    where: str,
    table: dict[str, Any],
    prefix: str,
    base: Path,
    environ: Mapping[str, str] | None,
) -> SecretSource | None:
    file, env = table.get(f"{prefix}_file"), table.get(f"{prefix}_env")
    if file is not None and env is not None:
        raise ConnectionsError(f"{where}: give {prefix}_file or {prefix}_env, not both")
    if file is not None:
        return SecretSource(file=_path(base, file, where, f"{prefix}_file"), environ=environ)
    if env is not None:
        if not isinstance(env, str) or not env:
            raise ConnectionsError(f"{where}: {prefix}_env must name a variable")
        return SecretSource(env=env, environ=environ)
    return None


def _auth(
    where: str, table: dict[str, Any], base: Path, environ: Mapping[str, str] | None
) -> TokenAuthConfig | None:
    where = f"{where}.auth"
    unknown = set(table) - _AUTH_KEYS
    if "client_secret" in unknown or "private_key" in unknown:
        raise ConnectionsError(
            f"{where}: secrets are never written in this file; "
            "name a file (*_file) or an environment variable (*_env)"
        )
    if unknown:
        raise ConnectionsError(f"{where}: unknown keys {sorted(unknown)}")
    method = str(table.get("method", ""))
    if method == "none":
        return None
    if method not in AUTH_METHODS:
        raise ConnectionsError(f"{where}: method must be none or one of {', '.join(AUTH_METHODS)}")
    secret = _secret(where, table, "client_secret", base, environ)
    key = _secret(where, table, "private_key", base, environ)
    try:
        config = TokenAuthConfig(
            token_url=str(table.get("token_url", "")),
            client_id=str(table.get("client_id", "")),
            method=method,  # narrowed by the AUTH_METHODS check above
            secret=secret,
            private_key=key,
            key_id=str(table["key_id"]) if "key_id" in table else None,
            algorithm=str(table.get("algorithm", "RS384")),  # type: ignore[arg-type]
            scope=str(table["scope"]) if "scope" in table else None,
            audience=str(table["audience"]) if "audience" in table else None,
            refresh_margin_s=_number(where, "refresh_margin_s", table.get("refresh_margin_s", 30)),
        )
    except ValueError as error:
        raise ConnectionsError(f"{where}: {error}") from None
    for source in (secret, key):
        if source is not None:
            try:
                source.read()
            except HisAuthError as error:
                raise ConnectionsError(f"{where}: {error}") from None
    return config


def _tls(where: str, table: dict[str, Any], base: Path) -> TlsFiles:
    where = f"{where}.tls"
    unknown = set(table) - _TLS_KEYS
    if unknown:
        raise ConnectionsError(f"{where}: unknown keys {sorted(unknown)}")
    files = TlsFiles(
        **{key: _path(base, table[key], where, key) for key in _TLS_KEYS if key in table}
    )
    if (files.client_key_file is not None) and files.client_cert_file is None:
        raise ConnectionsError(f"{where}: client_key_file without client_cert_file")
    try:
        files.context()
    except (OSError, ssl.SSLError) as error:
        raise ConnectionsError(f"{where}: {type(error).__name__}: {error}") from None
    return files
