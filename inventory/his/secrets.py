"""Where a HIS connection's secrets come from: an environment variable or a file, never
the connections file itself (it is configuration, kept in version control).

A file is read again when it changes (its size, modification time or inode differ from
the last read) and whenever the caller forces it (after the HIS refused a token), so a
secret or key rotated by the platform's secret store is picked up without a restart.
The value is never part of a ``repr`` or an error message: those name the source only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from inventory.his.errors import HisAuthError

__all__ = ["SecretSource"]


class SecretSource:
    """One secret, from ``env`` (a variable name) or ``file`` (a path), exactly one."""

    def __init__(
        self,
        *,
        env: str | None = None,
        file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (env is None) == (file is None):
            raise ValueError("a secret comes from exactly one of an environment variable or a file")
        self.env = env
        self.file = file
        self._environ = environ if environ is not None else os.environ
        self._value: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        #: How many times the file was read (tests watch rotation with it).
        self.reads = 0

    @property
    def label(self) -> str:
        """Where the secret lives, for messages: ``env:NAME`` or ``file:PATH``."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def __repr__(self) -> str:
        return f"SecretSource({self.label})"

    def read(self, *, force: bool = False) -> str:
        """The secret (stripped of surrounding whitespace), re-read when the file changed
        or ``force``; :class:`HisAuthError` when it is missing or empty."""
        if self.env is not None:
            value = self._environ.get(self.env, "").strip()
            if not value:
                raise HisAuthError(f"the secret {self.label} is not set")
            return value
        assert self.file is not None
        try:
            stat = self.file.stat()
        except OSError as error:
            raise HisAuthError(
                f"the secret {self.label} cannot be read: {type(error).__name__}"
            ) from None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if force or self._value is None or stamp != self._stamp:
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise HisAuthError(
                    f"the secret {self.label} cannot be read: {type(error).__name__}"
                ) from None
            if not value:
                raise HisAuthError(f"the secret {self.label} is empty")
            self._value, self._stamp = value, stamp
            self.reads += 1
        return self._value

    def changed(self) -> bool:
        """Whether the file differs from the last read (an environment variable: never)."""
        if self.file is None or self._stamp is None:
            return False
        try:
            stat = self.file.stat()
        except OSError:
            return True
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns) != self._stamp
