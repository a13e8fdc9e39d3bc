"""Stateful property test: the outbox behaves like a simple model under any mix of operations,
including restarts and the size cap, and its seqs never go backwards."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox, StoreError

devices = st.sampled_from(["m1", "m2", "smoke-3"])
reading_st = st.builds(
    Reading,
    device_id=devices,
    point=st.sampled_from(["flow", "total"]),
    value=st.one_of(st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none()),
    unit=st.sampled_from(["", "m3"]),
    ts=st.floats(min_value=0, max_value=2e9),
)
event_st = st.builds(
    Event,
    device_id=devices,
    kind=st.sampled_from(["smoke", "tilt"]),
    state=st.sampled_from(list(EventState)),
    severity=st.sampled_from(list(Severity)),
    ts=st.floats(min_value=0, max_value=2e9),
    attrs=st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)


def as_stored(r: Reading) -> Reading:
    """A reading as the outbox gives it back: exactly as given (NaN compares unequal: a marker)."""
    value = "<nan>" if isinstance(r.value, float) and math.isnan(r.value) else r.value
    return dataclasses.replace(r, value=value, ts=float(r.ts))


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.db = self.dir / "m.db"
        self.ob = Outbox(self.db, synchronous="normal")
        self.model: dict[Lane, dict[int, Reading | Event]] = {Lane.EVENT: {}, Lane.TELEMETRY: {}}
        self.state: dict[str, str] = {}
        self.next_seq = 1

    def teardown(self) -> None:
        self.ob.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(readings=st.lists(reading_st, max_size=8), events=st.lists(event_st, max_size=3))
    def append(self, readings: list[Reading], events: list[Event]) -> None:
        first, last = self.ob.append(readings, events)
        n = len(readings) + len(events)
        if n == 0:
            assert (first, last) == (0, -1)
            return
        assert first == self.next_seq and last == first + n - 1
        for i, r in enumerate(readings):
            self.model[Lane.TELEMETRY][first + i] = as_stored(r)
        for i, e in enumerate(events):
            self.model[Lane.EVENT][first + len(readings) + i] = e
        self.next_seq = last + 1

    @rule(lane=st.sampled_from(list(Lane)), back=st.integers(0, 10))
    def ack(self, lane: Lane, back: int) -> None:
        upto = self.next_seq - 1 - back
        expected = [s for s in self.model[lane] if s <= upto]
        assert self.ob.ack(lane, upto) == len(expected)
        for s in expected:
            del self.model[lane][s]

    @rule(data=st.data())
    def ack_seqs(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.integers(0, self.next_seq + 2), max_size=6, unique=True))
        expected = [s for s in seqs if s in self.model[Lane.EVENT] or s in self.model[Lane.TELEMETRY]]
        assert self.ob.ack_seqs(seqs) == len(expected)
        for s in expected:
            self.model[Lane.EVENT].pop(s, None)
            self.model[Lane.TELEMETRY].pop(s, None)

    @rule(key=st.sampled_from(["a", "b.c"]), value=st.text(max_size=10))
    def put_state(self, key: str, value: str) -> None:
        self.ob.put_state(key, value)
        self.state[key] = value

    @rule()
    def restart(self) -> None:
        self.ob.close()
        self.ob = Outbox(self.db, synchronous="normal")

    @precondition(lambda self: self.model[Lane.TELEMETRY] or self.model[Lane.EVENT])
    @rule(lane=st.sampled_from(list(Lane)), after_back=st.integers(0, 5), limit=st.integers(1, 5))
    def peek_window(self, lane: Lane, after_back: int, limit: int) -> None:
        after = max(0, self.next_seq - 1 - after_back)
        got = self.ob.peek(lane, after_seq=after, limit=limit)
        want = sorted(s for s in self.model[lane] if s > after)[:limit]
        assert [r.seq for r in got] == want

    @invariant()
    def matches_model(self) -> None:
        for lane in Lane:
            rows = self.ob.peek(lane, limit=10_000)
            assert [r.seq for r in rows] == sorted(self.model[lane])
            for r in rows:
                assert r.lane is lane and r.record == self.model[lane][r.seq] and r.ts == r.record.ts
        assert self.ob.next_seq == self.next_seq
        stats = self.ob.stats()  # row counts kept up to date in memory after the first call
        assert [stats.lane(lane).rows for lane in Lane] == [len(self.model[lane]) for lane in Lane]
        for k, v in self.state.items():
            assert self.ob.get_state(k) == v


OutboxMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestOutboxModel = OutboxMachine.TestCase


def test_use_after_close_is_a_store_error(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "c.db")
    ob.close()
    ob.close()
    with pytest.raises(StoreError):
        ob.append([Reading("d", "p", 1.0, "", 1.0)], [])
    with pytest.raises(StoreError):
        ob.peek(Lane.TELEMETRY)
    with pytest.raises(StoreError):
        ob.get_state("x")


def test_readings_written_by_another_connection_are_read(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    reader = Outbox(db)
    with Outbox(db) as writer:
        writer.append([Reading("new-dev", "flow", 1.5, "m3/h", 10.0)], [])
    (row,) = reader.peek(Lane.TELEMETRY)
    assert row.record == Reading("new-dev", "flow", 1.5, "m3/h", 10.0)
    reader.close()
