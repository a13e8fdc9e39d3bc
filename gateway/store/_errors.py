"""Typed errors of the outbox. They carry the file and what went wrong; nobody parses messages."""

from __future__ import annotations

from citynerve.gateway.api import PermanentError, TransientError


class StoreError(PermanentError):
    """The outbox file cannot be used: not a database, unreadable, written by a newer gateway."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"outbox {path}: {reason}")


class SchemaVersionError(StoreError):
    """The file's schema is newer than this gateway knows: refuse rather than guess (downgrade)."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            path, f"schema version {found} is newer than this gateway supports ({supported}); upgrade"
        )


class StoreBusyError(TransientError):
    """SQLite reported the file locked or the disk full/unwritable: may succeed later."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"outbox {path}: {reason}")


class RecordError(PermanentError):
    """A record cannot be stored as it is (e.g. an event whose attrs are not JSON types)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class StoreFullError(StoreBusyError):
    """SQLite reported the disk (or the file system's quota) full: SQLITE_FULL."""
