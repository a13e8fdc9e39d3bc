"""Storage faults: unstorable records, store epochs, damaged and corrupt files, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.api import Event, EventState, Reading, Severity
from gateway.store import AsyncOutbox, Lane, OutboxWriter, RecordError, unstorable
from gateway.store._outbox import Outbox

_NOW = object()


def reading(i: int, ts: object = _NOW) -> Reading:
    return Reading("meter-1", "p", float(i), "kWh", 1e9 + i if ts is _NOW else ts)  # type: ignore[arg-type]


def alarm(i: int = 0, ts: object = _NOW) -> Event:
    t = 1e9 + i if ts is _NOW else ts
    return Event("smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, t)  # type: ignore[arg-type]


def event(**kw: object) -> Event:
    return Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, **kw)  # type: ignore[arg-type]


async def _wait(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling a counter of the real writer
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("bad_ts", [None, math.nan, math.inf, -math.inf, "now", 1e300])
async def test_a_record_with_a_bad_timestamp_never_blocks_later_writes(
    tmp_path: Path, bad_ts: object
) -> None:
    # The field report: one record with a bad timestamp made every later commit fail and retry forever.
    async with AsyncOutbox(tmp_path / "o.db", synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.01)
        task = asyncio.create_task(writer.run())
        try:
            writer.put_readings([reading(1), reading(2, ts=bad_ts), reading(3)])  # type: ignore[arg-type]
            writer.put_event(alarm(1, ts=bad_ts))
            writer.put_event(alarm(2))
            await _wait(lambda: writer.counters().committed_rows == 3)
            c = writer.counters()
            assert (c.committed_readings, c.committed_events, c.rejected, c.failed_commits) == (2, 1, 2, 0)
            writer.put_readings([reading(4)])
            await _wait(lambda: writer.counters().committed_readings == 3)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        rows = await ob.peek(Lane.TELEMETRY)
        assert [r.record.value for r in rows] == [1.0, 3.0, 4.0]


def test_one_definition_of_storable() -> None:
    assert unstorable(reading(1)) is None
    assert unstorable(alarm(1)) is None
    assert unstorable(Reading("m", "p", math.nan, "", 1e9)) is None  # a bad value is a reading (quality says)
    assert "ts" in (unstorable(reading(1, ts=math.nan)) or "")
    assert "ts" in (unstorable(alarm(1, ts="x")) or "")
    assert unstorable(Reading("m" * 10_000, "p", 1, "", 1e9)) is not None
    assert unstorable(Reading("m", "p", "x" * 100_000, "", 1e9)) is not None
    assert unstorable(Reading("m", "p", [1], "", 1e9)) is not None  # type: ignore[arg-type]
    assert (
        unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, attrs={"x": object()})) is not None
    )
    assert unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, value=[1])) is not None  # type: ignore[arg-type]
    assert (
        unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, message="m" * 100_000)) is not None
    )


def test_outbox_refuses_an_unstorable_record_before_writing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", synchronous="normal") as ob:
        with pytest.raises(RecordError):
            ob.append([reading(1), reading(2, ts=math.nan)], [])
        with pytest.raises(RecordError):
            ob.append([], [alarm(1, ts=math.inf)])
        assert ob.next_seq == 1
        assert ob.append([reading(3)], [alarm(2)]) == (1, 2)
