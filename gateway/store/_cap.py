"""The outbox's size cap and its disk-full mode: what is dropped, oldest first, when room runs out.

A mixin of `Outbox` (kept apart so each module stays small): `_enforce_cap` runs inside every
append's transaction, `_disk_full` when SQLite reports SQLITE_FULL. See docs/store.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3

from citynerve.gateway.api import SYSTEM_CLOCK, Clock
from citynerve.gateway.store._config import MIB
from citynerve.gateway.store._epoch import RESERVE_BYTES, make_reserve, remove_corrupt_copies, reserve_path
from citynerve.gateway.store._errors import StoreFullError
from citynerve.gateway.store._file import OutboxFile, Synchronous
from citynerve.gateway.store._stats import LANE_KEY, LANE_TABLE, Lane

log = logging.getLogger(__name__)

# Trim a little below the cap so that a full outbox does not trim on every single append.
_TRIM_TARGET = 0.98
# First guesses of bytes per stored row (an event; a block of readings), refined from what each
# trim actually frees. A guess on the large side deletes fewer rows than needed at first.
_ROW_BYTES_GUESS = {Lane.EVENT: 512.0, Lane.TELEMETRY: 4096.0}
_TRIM_LOG_INTERVAL_S = 60.0
_FULL_CAP_STEP = 0.9  # the disk-full cap: 90 % of the pages used (again 90 % of that if still full)


class CappedFile(OutboxFile):
    """The outbox file with its size cap (`max_bytes`) and disk-full eviction."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        synchronous: Synchronous = "full",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_bytes = max_bytes
        self._row_bytes = dict(_ROW_BYTES_GUESS)
        self._dropped_unlogged: dict[Lane, int] = {}
        self._trim_logged_at = self._cap_logged_at = -math.inf
        self._full_cap: int | None = None  # bytes the outbox may use while the disk is full
        super().__init__(path, synchronous=synchronous, clock=clock)
        if self.disk_full:  # opened on a full disk, the reserve given back: as after SQLITE_FULL
            self._full_cap = int(self._used_bytes() * _FULL_CAP_STEP)

    def _delete_upto(self, lane: Lane, upto_seq: int) -> int:
        """Delete `lane`'s rows with seq <= upto_seq inside the open transaction; how many."""
        raise NotImplementedError

    def _held_by_platforms(self, lane: Lane) -> int:
        """End-to-end mode: rows of `lane` up to here are held by the platform of every destination
        that wants them (acknowledged; the uplink's delete may still be on its way). The size cap
        deletes them as delivered, never counts or announces them as dropped."""
        return 0

    def _disk_full(self, err: StoreFullError, attempt: int) -> None:
        """SQLITE_FULL: make room, then the append is tried again.

        Gives back the reserve file (made at open), checkpoints (the WAL is then reused from its
        start instead of growing) and caps the outbox below the pages it uses now: the size cap then
        evicts the oldest telemetry (events stay) inside each append, as `disk_full` (counted,
        announced), so that the file stops growing and freed pages are reused in place. Lifted once
        the disk has room for the reserve again (`_after_disk_full`). A corrupt outbox kept from
        before (quarantine) is deleted first: its room is the outbox's before any telemetry."""
        if freed := remove_corrupt_copies(self.path):
            log.error(
                "outbox %s: disk full: deleted the corrupt outbox kept aside (%d bytes)", self.path, freed
            )
            return
        if not self.disk_full:
            self.disk_full = True
            log.error("outbox %s: disk full (%s): evicting old telemetry to go on", self.path, err.reason)
        with contextlib.suppress(OSError):
            os.unlink(reserve_path(self.path))
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        used = self._used_bytes()
        if self._full_cap is None or attempt > 0:  # lower it again only when even that did not fit
            self._full_cap = int(min(self._full_cap or used, used) * _FULL_CAP_STEP)

    def _after_disk_full(self) -> None:
        # Checkpoint after every commit while the disk is full, so that the WAL never grows.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            room = st.f_bavail * st.f_frsize >= RESERVE_BYTES + MIB
        except OSError:
            room = False
        if room and make_reserve(self.path):
            self.disk_full = False
            self._full_cap = None
            log.warning("outbox %s: space again, the disk-full cap is lifted", self.path)

    def _enforce_cap(self) -> None:
        """Inside the append's transaction: drop oldest telemetry, then oldest events, until the
        used pages fit under the cap again. Drops are counted in the same transaction."""
        cap, reason, target = self.max_bytes, "size_cap", int(self.max_bytes * _TRIM_TARGET)
        if self._full_cap is not None and self._full_cap < cap:
            # Far below: on a full disk each trim frees half the room (and costs one notice).
            cap, reason, target = self._full_cap, "disk_full", self._full_cap // 2
        used = self._used_bytes()
        if used <= cap:
            return
        conn = self._conn
        for lane in (Lane.TELEMETRY, Lane.EVENT):
            held = self._held_by_platforms(lane)
            if held > 0:  # the platform has these already: they make room first, as deliveries
                self._tx_rows[lane] -= self._delete_upto(lane, held)
        used = self._used_bytes()
        if used <= cap:
            return
        # A full disk never costs an event: only telemetry makes room for it.
        for lane in (Lane.TELEMETRY,) if reason == "disk_full" else (Lane.TELEMETRY, Lane.EVENT):
            table, key = LANE_TABLE[lane], LANE_KEY[lane]
            while used > target:
                excess = used - target
                n = max(4, math.ceil(excess / self._row_bytes[lane]))
                # Rows of this transaction (the append, the notices of these drops) stay.
                before = self._next_seq
                cut = conn.execute(
                    f"SELECT {key} FROM {table} WHERE {key} < ? ORDER BY {key} LIMIT 1 OFFSET ?",
                    (before, n - 1),
                ).fetchone()
                where, args = (
                    (f" WHERE {key} < ?", (before,)) if cut is None else (f" WHERE {key} <= ?", (cut[0],))
                )
                deleted, dropped = self._drop(lane, where, args, reason)
                if deleted <= 0:
                    break
                self._log_trim(lane, dropped, reason, cap)
                now = self._used_bytes()
                freed = used - now
                if freed > 0:
                    # Learn the real row size so the next trim removes about what is needed.
                    self._row_bytes[lane] = max(8.0, freed / deleted)
                else:  # no page emptied yet: take bigger steps
                    self._row_bytes[lane] = max(8.0, self._row_bytes[lane] / 2)
                used = now
            if used <= target:
                return
        if used > cap and self.clock.monotonic() - self._cap_logged_at >= _TRIM_LOG_INTERVAL_S:
            self._cap_logged_at = self.clock.monotonic()
            log.error(
                "outbox %s: %d bytes used, more than the cap %d, with nothing left to drop",
                self.path,
                used,
                cap,
            )

    def _log_trim(self, lane: Lane, dropped: int, reason: str, cap: int) -> None:
        # A full outbox trims on about every 2 % of the cap appended: log at most once a minute.
        self._dropped_unlogged[lane] = self._dropped_unlogged.get(lane, 0) + dropped
        now = self.clock.monotonic()
        if now - self._trim_logged_at < _TRIM_LOG_INTERVAL_S:
            return
        self._trim_logged_at = now
        what = ", ".join(f"{n} {ln.name.lower()}" for ln, n in self._dropped_unlogged.items())
        self._dropped_unlogged = {}
        # Which cap: a disk-full spell's is far below max_bytes, which it used to name.
        why = "the disk is full" if reason == "disk_full" else "max_bytes"
        log.warning(
            "outbox %s at its cap (%d bytes: %s): dropped the oldest rows: %s", self.path, cap, why, what
        )
