"""OutboxWriter: batching, latency bound, alarms first, flush on stop, backlog and failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter, StoreBusyError
from citynerve.gateway.store._blocks import MarkedReading, ReadingMark


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading("meter-1", f"p{i % 10}", float(i), "kWh", 1e9 + i) for i in range(start, start + n)]


def alarm(i: int = 0) -> Event:
    return Event("smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, 1e9 + i)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    async with AsyncOutbox(tmp_path / "w.db", synchronous="normal") as ob:
        yield ob


@contextlib.asynccontextmanager
async def running(writer: OutboxWriter) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(writer.run(), name="outbox.writer")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_batches_by_max_rows(outbox: AsyncOutbox) -> None:
    commits: list[tuple[Lane, int]] = []
    outbox.on_commit(lambda lane, seq: commits.append((lane, seq)))
    writer = OutboxWriter(outbox, max_latency_s=10.0, max_rows=1000)
    async with running(writer):
        writer.put_readings(readings(2500))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(commits) >= 2:
                break
        # Two full batches went at once; the 500 left wait for the (long) latency bound.
        assert commits == [(Lane.TELEMETRY, 1000), (Lane.TELEMETRY, 2000)]
        assert writer.counters().pending_readings == 500
    # Cancelling the writer committed the rest.
    assert commits[-1] == (Lane.TELEMETRY, 2500)
    c = writer.counters()
    assert c.committed_readings == 2500 and c.commits == 3 and c.pending_readings == 0


async def test_latency_bound_for_a_trickle(outbox: AsyncOutbox) -> None:
    put_at: dict[int, float] = {}
    delays: list[float] = []

    def committed(lane: Lane, seq: int) -> None:
        now = time.monotonic()
        for s in [s for s in put_at if s <= seq]:
            delays.append(now - put_at.pop(s))

    outbox.on_commit(committed)
    writer = OutboxWriter(outbox, max_latency_s=0.1, max_rows=5000)
    async with running(writer):
        for i in range(30):
            put_at[i + 1] = time.monotonic()
            writer.put_readings(readings(1, i))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    assert len(delays) == 30 and not put_at
    assert max(delays) < 0.1 + 0.15  # the bound plus scheduling slack on a busy machine
    # A trickle is batched: far fewer commits than readings.
    assert writer.counters().commits <= 10


async def test_events_do_not_wait_for_telemetry_batching(outbox: AsyncOutbox) -> None:
    event_commit = asyncio.Event()
    outbox.on_commit(lambda lane, seq: event_commit.set() if lane is Lane.EVENT else None)
    writer = OutboxWriter(outbox, max_latency_s=30.0, max_rows=5000)
    async with running(writer):
        writer.put_readings(readings(100))
        await asyncio.sleep(0.05)
        t = time.monotonic()
        writer.put_event(alarm())
        await asyncio.wait_for(event_commit.wait(), 2.0)
        assert time.monotonic() - t < 1.0
        # The telemetry is still batching (30 s bound), the alarm is already stored.
        rows = await outbox.peek(Lane.EVENT)
        assert len(rows) == 1 and (await outbox.peek(Lane.TELEMETRY)) == []
        assert writer.counters().pending_readings == 100


async def test_flush_commits_everything(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox, max_latency_s=60.0, max_rows=300)
    writer.put_readings(readings(1000))
    writer.put_event(alarm(1))
    await writer.flush()
    assert len(await outbox.peek(Lane.TELEMETRY, limit=5000)) == 1000
    assert len(await outbox.peek(Lane.EVENT)) == 1
    assert writer.counters().commits == 1 + 4  # the event alone, then 4 telemetry batches


async def test_backlog_full_drops_oldest_readings_never_events(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox, max_latency_s=1.0, max_rows=100, max_backlog=1000)
    writer.put_readings(readings(700, 0))
    writer.put_readings(readings(700, 700))  # no run(): nothing drains, the backlog overflows
    for i in range(5):
        writer.put_event(alarm(i))
    c = writer.counters()
    assert c.dropped_readings == 400 and c.pending_readings == 1000 and c.pending_events == 5
    await writer.flush()
    kept = await outbox.peek(Lane.TELEMETRY, limit=5000)
    assert [r.record.value for r in kept] == [float(i) for i in range(400, 1400)]  # type: ignore[union-attr]
    assert len(await outbox.peek(Lane.EVENT)) == 5


async def test_unstorable_event_is_rejected_at_put(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox)
    bad = alarm()
    bad.attrs["x"] = {1, 2}  # a set is not JSON
    writer.put_event(bad)
    writer.put_event(alarm(1))
    await writer.flush()
    assert writer.counters().rejected == 1
    assert len(await outbox.peek(Lane.EVENT)) == 1


async def test_unstorable_reading_is_dropped_rest_committed(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox)
    odd = Reading("d", "p", complex(1, 2), "", 1.0)  # type: ignore[arg-type]
    writer.put_readings([*readings(3), odd, *readings(2, 3)])
    await writer.flush()
    assert writer.counters().rejected == 1
    assert len(await outbox.peek(Lane.TELEMETRY)) == 5


class FlakyOutbox(AsyncOutbox):
    """The real outbox whose first appends fail the way a locked or full disk does."""

    def __init__(self, *args: object, failures: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failures = failures

    async def append(self, readings: Sequence[Reading], events: Sequence[Event]) -> tuple[int, int]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreBusyError(self.path, "database is locked")
        return await super().append(readings, events)


async def test_failed_commit_keeps_records_and_retries(tmp_path: Path) -> None:
    async with FlakyOutbox(tmp_path / "f.db", failures=2, synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.05)
        async with running(writer):
            writer.put_event(alarm())
            writer.put_readings(readings(10))
            for _ in range(400):
                await asyncio.sleep(0.01)
                if writer.counters().committed_rows == 11:
                    break
        c = writer.counters()
        assert c.failed_commits == 2 and c.committed_rows == 11
        assert len(await ob.peek(Lane.TELEMETRY)) == 10 and len(await ob.peek(Lane.EVENT)) == 1


async def test_cancel_during_a_commit_loses_and_duplicates_nothing(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox, max_latency_s=0.01, max_rows=20_000, max_backlog=200_000)
    task = asyncio.create_task(writer.run())
    for k in range(10):
        writer.put_readings(readings(10_000, k * 10_000))
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)  # some commit is likely in flight now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await outbox.peek(Lane.TELEMETRY, limit=200_000)
    assert [r.seq for r in rows] == list(range(1, 100_001))
    assert [r.record.value for r in rows] == [float(i) for i in range(100_000)]  # type: ignore[union-attr]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    ob = AsyncOutbox(tmp_path / "x.db")
    with pytest.raises(ValueError):
        OutboxWriter(ob, max_latency_s=0)
    with pytest.raises(ValueError):
        OutboxWriter(ob, max_rows=100, max_backlog=10)


async def test_garbage_records_are_rejected_never_retried_forever(outbox: AsyncOutbox) -> None:
    writer = OutboxWriter(outbox)
    no_ts = Reading("d", "p", 1.0, "", None)  # type: ignore[arg-type]
    writer.put_readings([*readings(2), "not a reading", no_ts, *readings(1, 2)])  # type: ignore[list-item]
    writer.put_event("not an event")  # type: ignore[arg-type]
    await asyncio.wait_for(writer.flush(), 5.0)
    c = writer.counters()
    assert c.rejected == 3 and c.committed_readings == 3 and c.failed_commits == 0
    assert [r.record.value for r in await outbox.peek(Lane.TELEMETRY)] == [0.0, 1.0, 2.0]  # type: ignore[union-attr]


async def test_text_that_is_not_utf8_is_rejected_never_retried_forever(outbox: AsyncOutbox) -> None:
    # json.loads makes a lone surrogate of "\\ud800" (an MQTT command, a panel's text): SQLite
    # cannot store it. Refused at the door; a record that passes the door and is then refused by
    # the outbox (a clock mark's boot id) costs only itself: the rest are committed one by one.
    lone = json.loads('"\\ud800"')
    writer = OutboxWriter(outbox, max_latency_s=0.01)
    writer.put_event(Event("dev-1", "note", EventState.RAISED, Severity.MINOR, 1e9, message="x" + lone))
    writer.put_event(Event("dev-1", "note", EventState.RAISED, Severity.MINOR, 1e9, attrs={"t": lone}))
    good = alarm(1)
    writer.put_event(good)
    marked = MarkedReading("m", "p", 9.0, "", 1e9, mark=ReadingMark(1.0, "boot" + lone))
    writer.put_readings(
        [*readings(2), Reading("dev-1", "label", "y" + lone, "", 1e9), marked, *readings(1, 2)]
    )
    await asyncio.wait_for(writer.flush(), 5.0)
    c = writer.counters()
    assert (c.rejected, c.committed_events, c.committed_readings) == (4, 1, 3)
    assert (c.pending_events, c.pending_readings, c.failed_commits) == (0, 0, 0)
    assert [r.record.value for r in await outbox.peek(Lane.TELEMETRY)] == [0.0, 1.0, 2.0]  # type: ignore[union-attr]
    assert [r.record for r in await outbox.peek(Lane.EVENT)] == [good]


async def test_disk_full_keeps_records_until_space_returns(outbox: AsyncOutbox) -> None:
    """A real SQLITE_FULL (SQLite's page limit): the writer keeps everything and commits it later."""
    sync = outbox._ob()
    await outbox._run(lambda: sync._conn.execute("PRAGMA max_page_count = 8"))
    writer = OutboxWriter(outbox, max_latency_s=0.02)
    async with running(writer):
        writer.put_event(alarm())
        writer.put_readings([Reading(f"dev-{i}", "p", float(i), "", 1.0) for i in range(3000)])
        for _ in range(300):
            await asyncio.sleep(0.01)
            if writer.counters().failed_commits >= 2:
                break
        assert writer.counters().failed_commits >= 2 and writer.counters().committed_readings == 0
        await outbox._run(lambda: sync._conn.execute("PRAGMA max_page_count = 1073741823"))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if writer.counters().committed_rows == 3001:
                break
    assert writer.counters().committed_rows == 3001
    assert len(await outbox.peek(Lane.TELEMETRY, limit=5000)) == 3000


async def test_puts_stay_cheap_when_the_backlog_is_full(outbox: AsyncOutbox) -> None:
    """Bus owners call put_readings on the event loop: even with the store stalled it only copies."""
    writer = OutboxWriter(outbox, max_rows=1000, max_backlog=50_000)
    batch = readings(10_000)
    # CPU time of this process, not wall time: other load on a shared machine does not count. Copying
    # 200,000 readings costs ~0.05 s; a put that did I/O or sorted the backlog would cost far more.
    t = time.process_time()
    for _ in range(20):  # 200,000 readings into a 50,000 backlog, nothing draining
        writer.put_readings(batch)
    assert time.process_time() - t < 2.0
    c = writer.counters()
    assert c.pending_readings == 50_000 and c.dropped_readings == 150_000
