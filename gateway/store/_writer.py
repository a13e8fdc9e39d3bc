"""`OutboxWriter`: batches what the pipeline produces into few commits, alarms first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.store._async import AsyncOutbox
from citynerve.gateway.store._codec import unstorable
from citynerve.gateway.store._config import TELEMETRY_WINDOW_MS
from citynerve.gateway.store._errors import RecordError

log = logging.getLogger(__name__)

_RETRY_INITIAL_S = 0.5
_RETRY_MAX_S = 30.0
_EVENT_RETRY_MAX_S = 2.0  # while events wait in memory
_REJECT_LOG_FIRST = 10  # then one line per _REJECT_LOG_EVERY rejected records
_REJECT_LOG_EVERY = 1000


@dataclass(frozen=True, slots=True)
class WriterCounters:
    committed_readings: int
    committed_events: int
    commits: int
    last_commit_s: float  # duration of the last commit, seconds (0.0 before the first)
    pending_readings: int
    pending_events: int
    dropped_readings: int  # oldest buffered readings dropped because the backlog was full
    rejected: int  # records that can never be stored (e.g. event attrs that are not JSON)
    failed_commits: int

    @property
    def committed_rows(self) -> int:
        return self.committed_readings + self.committed_events

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "committed_rows": self.committed_rows}


class OutboxWriter:
    """Collects readings and events from the pipeline and commits them to an `AsyncOutbox`.

    - Events are committed as soon as the writer gets to run, in a commit of their own: an alarm
      never waits for a telemetry batch to fill.
    - Readings are committed when `max_rows` are waiting or the oldest has waited `max_latency_s`
      (the telemetry window, `[store] commit_interval_ms`: what a power cut can lose of them).
    - `put_readings` / `put_event` never block and never fail the caller (the bus owners). Backlog
      policy: at most `max_backlog` readings wait in memory; beyond that the OLDEST waiting readings
      are dropped and counted (`dropped_readings`). Events are never dropped here.
    - A failed commit (disk full, file locked) keeps its records and is retried with backoff.
    Run `run()` as a task; cancelling it commits what it holds before it ends.
    """

    def __init__(
        self,
        outbox: AsyncOutbox,
        *,
        max_latency_s: float = TELEMETRY_WINDOW_MS / 1000,
        max_rows: int = 1000,
        max_backlog: int = 100_000,
    ) -> None:
        if max_latency_s <= 0 or max_rows < 1 or max_backlog < max_rows:
            raise ValueError("need max_latency_s > 0, max_rows >= 1 and max_backlog >= max_rows")
        self.outbox = outbox
        self.max_latency_s = max_latency_s
        self.max_rows = max_rows
        self.max_backlog = max_backlog
        self._readings: list[Reading] = []
        self._oldest: float | None = None  # monotonic time the oldest waiting reading arrived
        self._events: list[Event] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Task[None] | None = None
        self._dropping = False
        self._committed_readings = 0
        self._committed_events = 0
        self._commits = 0
        self._last_commit_s = 0.0
        self._dropped = 0
        self._rejected = 0
        self._failed = 0
        self.commit_started: float | None = None  # monotonic start of the commit in flight (watchdog)

    # -- producers (sync, never block) ---------------------------------------------------------

    def put_readings(self, readings: Sequence[Reading]) -> None:
        """Queue readings for the next telemetry commit; unstorable ones are refused and counted."""
        if not readings:
            return
        if any(unstorable(r) is not None for r in readings):
            readings = [r for r in readings if self._storable(r)]
        buf = self._readings
        was_empty = not buf
        buf.extend(readings)
        if was_empty:
            self._oldest = time.monotonic()
            self._wake.set()  # start the latency clock in run()
        over = len(buf) - self.max_backlog
        if over > 0:
            del buf[:over]
            self._dropped += over
            if not self._dropping:
                self._dropping = True
                log.warning("outbox writer backlog full (%d readings): dropping the oldest", self.max_backlog)
        elif self._dropping and len(buf) < self.max_backlog // 2:
            self._dropping = False
            log.warning("outbox writer backlog recovered; %d readings dropped so far", self._dropped)
        if len(buf) >= self.max_rows:
            self._wake.set()

    def put_event(self, event: Event) -> None:
        """Queue an event; it is committed ahead of any waiting telemetry."""
        if not self._storable(event):  # refuse it here, not inside a commit shared with others
            return
        self._events.append(event)
        self._wake.set()

    def _storable(self, record: Reading | Event) -> bool:
        why = unstorable(record)
        if why is None:
            return True
        self._reject(record, why)
        return False

    def _reject(self, record: Reading | Event, why: str) -> None:
        self._rejected += 1
        if self._rejected <= _REJECT_LOG_FIRST or self._rejected % _REJECT_LOG_EVERY == 0:
            log.error(
                "outbox writer: %s rejected (%d so far): %s",
                type(record).__name__.lower(),
                self._rejected,
                why,
            )

    def counters(self) -> WriterCounters:
        return WriterCounters(
            committed_readings=self._committed_readings,
            committed_events=self._committed_events,
            commits=self._commits,
            last_commit_s=self._last_commit_s,
            pending_readings=len(self._readings),
            pending_events=len(self._events),
            dropped_readings=self._dropped,
            rejected=self._rejected,
            failed_commits=self._failed,
        )

    # -- the commit loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Commit until cancelled; on cancellation commit everything still held, then re-raise."""
        retry_s = _RETRY_INITIAL_S
        try:
            while True:
                delay = self._due_in()
                if delay is None:
                    await self._wake.wait()
                elif delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
                try:
                    await self._commit(force=False)
                    retry_s = _RETRY_INITIAL_S
                except Exception:  # the store's GatewayError, or a bug: keep the data, retry later
                    # Events held in memory are retried often: they must not wait there for long.
                    wait_s = min(retry_s, _EVENT_RETRY_MAX_S) if self._events else retry_s
                    log.exception("outbox commit failed; retrying in %.1f s", wait_s)
                    await asyncio.sleep(wait_s)
                    retry_s = min(retry_s * 2, _RETRY_MAX_S)
        except asyncio.CancelledError:
            await self._stop()
            raise

    async def _stop(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            with contextlib.suppress(Exception):
                await self._inflight
        try:
            await self.flush()
        except Exception:
            log.exception(
                "outbox writer stopped with %d readings and %d events not committed",
                len(self._readings),
                len(self._events),
            )

    async def flush(self) -> None:
        """Commit everything queued now. Raises the store's error if a commit fails."""
        while self._events or self._readings:
            await self._commit(force=True)

    def _due_in(self) -> float | None:
        """Seconds until a commit is due; 0 for now; None when nothing waits."""
        if self._events or len(self._readings) >= self.max_rows:
            return 0.0
        if not self._readings or self._oldest is None:
            return None
        return self._oldest + self.max_latency_s - time.monotonic()

    async def _commit(self, *, force: bool) -> None:
        async with self._lock:
            if self._events:
                events, self._events = self._events, []
                await self._append([], events)
            due = self._due_in()
            if self._readings and (force or (due is not None and due <= 0)):
                batch = self._readings[: self.max_rows]
                del self._readings[: self.max_rows]
                if not self._readings:
                    self._oldest = None
                await self._append(batch, [])

    async def _append(self, readings: list[Reading], events: list[Event]) -> None:
        # The commit runs as its own task, shielded: if run() is cancelled mid-commit, the commit
        # still finishes and _stop() waits for it, so nothing is committed twice or lost.
        task = asyncio.ensure_future(self._append_task(readings, events))
        self._inflight = task
        await asyncio.shield(task)

    async def _append_task(self, readings: list[Reading], events: list[Event]) -> None:
        start = time.perf_counter()
        self.commit_started = time.monotonic()
        try:
            await self.outbox.append(readings, events)
        except RecordError:
            # Mutated after put (a rule changed an event's attrs): drop just those, keep the rest.
            good_r = [r for r in readings if self._storable(r)]
            good_e = [e for e in events if self._storable(e)]
            if len(good_r) + len(good_e) == len(readings) + len(events):
                # Refused though each looked storable: one at a time, so only the bad are lost.
                await self._one_by_one(readings, events)
                return
            await self._append_task(good_r, good_e)
            return
        except BaseException:
            self._failed += 1
            self._requeue(readings, events)
            raise
        finally:
            self.commit_started = None
        self._last_commit_s = time.perf_counter() - start
        self._commits += 1
        self._committed_readings += len(readings)
        self._committed_events += len(events)

    async def _one_by_one(self, readings: list[Reading], events: list[Event]) -> None:
        """Append each record in a commit of its own; one the outbox refuses (RecordError) is
        counted as rejected. Any other failure keeps the records not committed yet, as a batch's."""
        records: list[Reading | Event] = [*readings, *events]
        for k, record in enumerate(records):
            one_r, one_e = ([record], []) if isinstance(record, Reading) else ([], [record])
            self.commit_started = time.monotonic()
            try:
                await self.outbox.append(one_r, one_e)
            except RecordError as err:
                self._reject(record, err.reason)
                continue
            except BaseException:
                self._failed += 1
                rest = records[k:]
                self._requeue(
                    [r for r in rest if isinstance(r, Reading)], [e for e in rest if isinstance(e, Event)]
                )
                raise
            self._commits += 1
            self._committed_readings += len(one_r)
            self._committed_events += len(one_e)

    def _requeue(self, readings: list[Reading], events: list[Event]) -> None:
        self._events[0:0] = events
        if readings:
            self._readings[0:0] = readings
            if self._oldest is None:
                self._oldest = time.monotonic()
