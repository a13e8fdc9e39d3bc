"""The outbox around an update: its schema, the copy taken before a migrating switch, and the copy put
back by a rollback (gateway/release/update.py). The service is stopped whenever the outbox itself is
replaced; the copy is taken from the live file with SQLite's backup API."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from citynerve.gateway.release.bundle import fsync_dir
from citynerve.gateway.release.state import UpdateError


def schema_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def restore_reason(outbox: Path, copy: Path, from_schema: int) -> str | None:
    """Why a rollback puts the pre-update copy back over `outbox` (None: it does not): the new
    release migrated the outbox beyond `from_schema`, or the outbox is not a database any more (its
    header damaged: the old release would start a new epoch on an empty one, while the copy holds
    every row stored before the update). Needs both files."""
    if not (outbox.exists() and copy.exists()):
        return None
    try:
        schema = schema_version(outbox)
    except sqlite3.Error as err:
        return f"unreadable ({err})"
    return "newer" if schema > from_schema else None


def set_aside(outbox: Path) -> str:
    """A damaged outbox (and its -wal / -shm) moved aside for forensics, as the store does."""
    from citynerve.gateway.store._epoch import quarantine  # the store's import only on this rare path

    return quarantine(str(outbox))


def outbox_copy_bytes(outbox: Path) -> int:
    """At most what a copy of the outbox takes: the file and its WAL (0 when there is none)."""
    total = 0
    for path in (outbox, Path(f"{outbox}-wal")):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def copy_outbox(src: Path, dest: Path, *, keep_free: int) -> None:
    """A consistent copy of a live SQLite file (the backup API), fsynced, renamed into place.

    Taken only when there is room for it and `keep_free` bytes besides: the running gateway writes
    its outbox on the same disk, and a full disk makes it evict telemetry. A copy that fails
    midway (the disk filled meanwhile) is removed; both are an UpdateError, nothing switched."""
    need, free = outbox_copy_bytes(src), shutil.disk_usage(dest.parent).free
    if free - keep_free < need:
        raise UpdateError(
            f"no room for the outbox copy the new release's migration needs: about {need} bytes, "
            f"{free} free and {keep_free} kept free (min_free_bytes); nothing was switched"
        )
    tmp = dest.with_suffix(".tmp")
    try:
        tmp.unlink(missing_ok=True)
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except (sqlite3.Error, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise UpdateError(f"cannot copy the outbox to {dest}: {err}; nothing was switched") from err


def restore_outbox(src: Path, dest: Path) -> None:
    """Put the pre-update copy back (the service is stopped): WAL and shm of the newer file go too."""
    for suffix in ("-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.name}.restore")
    shutil.copyfile(src, tmp)
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def written_after(outbox: Path, copy: Path) -> float:
    """Seconds the outbox (or its WAL) was written after `copy` was taken, by the file times (both
    stamped by this box's clock, so meaningful even without an RTC unless it was set meanwhile)."""
    last = max((p.stat().st_mtime for p in (outbox, Path(f"{outbox}-wal")) if p.exists()), default=0.0)
    return last - copy.stat().st_mtime
