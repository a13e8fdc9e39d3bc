"""kill -9 durability: every seq a process saw committed is in the file after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox

SYNC_CHILD = """
import sys
from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Outbox
ob = Outbox(sys.argv[1], synchronous=sys.argv[2])
i = 0
while True:
    rs = [Reading(f"m{k % 7}", "flow", float(i * 100 + k), "m3/h", 1e9 + i) for k in range(100)]
    alarm = Event("s1", "smoke", EventState.RAISED, Severity.CRITICAL, 1e9 + i, attrs={"i": i})
    ev = [alarm] if i % 5 == 0 else []
    first, last = ob.append(rs, ev)
    print(first, last, flush=True)
    i += 1
"""

WRITER_CHILD = """
import asyncio, sys
from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, OutboxWriter

async def main():
    async with AsyncOutbox(sys.argv[1], synchronous=sys.argv[2]) as ob:
        def committed(lane, seq):
            print(int(lane), seq, flush=True)
        ob.on_commit(committed)
        writer = OutboxWriter(ob, max_latency_s=0.01, max_rows=500)
        task = asyncio.create_task(writer.run())
        i = 0
        while True:
            writer.put_readings([Reading("m1", f"p{k}", float(i), "kWh", 1e9 + i) for k in range(50)])
            if i % 7 == 0:
                writer.put_event(Event("s1", "smoke", EventState.RAISED, Severity.CRITICAL, 1e9 + i))
            i += 1
            await asyncio.sleep(0.001)

asyncio.run(main())
"""


def run_and_kill(script: str, db: Path, synchronous: str, lines_before_kill: int) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(db), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) >= lines_before_kill:
                os.kill(proc.pid, signal.SIGKILL)
                break
        # Whatever the child printed before it died was also committed: read it all.
        rest, err = proc.communicate(timeout=30)
        lines.extend(rest.splitlines(keepends=True))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    return [ln for ln in lines if ln.endswith("\n")]  # a torn last line proves nothing


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_sigkill_mid_append_loses_nothing_committed(tmp_path: Path, synchronous: str) -> None:
    db = tmp_path / "kill.db"
    lines = run_and_kill(SYNC_CHILD, db, synchronous, 60)
    ranges = [tuple(map(int, ln.split())) for ln in lines]
    assert len(ranges) >= 60
    with Outbox(db) as ob:
        stored = {r.seq for lane in Lane for r in ob.peek(lane, limit=1_000_000)}
        for first, last in ranges:
            assert set(range(first, last + 1)) <= stored
        highest = max(last for _, last in ranges)
        # Seqs continue after the crash: never below what was handed out.
        assert ob.next_seq > highest
        first, _ = ob.append([Reading("m", "flow", 1.0, "m3/h", 2e9)], [])
        assert first > max(stored)
        events = ob.peek(Lane.EVENT, limit=10_000)
        assert [e.record.attrs["i"] for e in events] == list(range(0, 5 * len(events), 5))  # type: ignore[union-attr]


def test_sigkill_with_writer_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "killw.db"
    lines = run_and_kill(WRITER_CHILD, db, "full", 40)
    last_seen = {Lane.EVENT: 0, Lane.TELEMETRY: 0}
    for ln in lines:
        lane, seq = map(int, ln.split())
        assert seq > last_seen[Lane(lane)]
        last_seen[Lane(lane)] = seq
    assert last_seen[Lane.TELEMETRY] > 0 and last_seen[Lane.EVENT] > 0
    with Outbox(db) as ob:
        for lane, upto in last_seen.items():
            seqs = [r.seq for r in ob.peek(lane, limit=1_000_000)]
            assert upto in seqs
            # Every reading committed up to the last notified seq is there, in order, none missing.
            assert [s for s in seqs if s <= upto] == sorted(s for s in seqs if s <= upto)
        tele = [r.seq for r in ob.peek(Lane.TELEMETRY, limit=1_000_000)]
        ev = [r.seq for r in ob.peek(Lane.EVENT, limit=1_000_000)]
        # Lanes share one counter: together they are a gapless run from 1, and seq goes on above.
        seqs = sorted(tele + ev)
        assert seqs == list(range(1, seqs[-1] + 1)) and ob.next_seq > seqs[-1]


WINDOW_CHILD = """
import asyncio, sys, time
from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, OutboxWriter

async def main():
    async with AsyncOutbox(sys.argv[1]) as ob:
        ob.on_commit(lambda lane, seq: print(int(lane), seq, flush=True))
        writer = OutboxWriter(ob, max_latency_s=float(sys.argv[2]))
        task = asyncio.create_task(writer.run())
        i = 0
        while True:
            writer.put_readings([Reading("m1", "flow", float(i), "m3/h", time.time())])
            if i % 40 == 39:
                writer.put_event(Event("s1", "smoke", EventState.RAISED, Severity.CRITICAL, time.time()))
            i += 1
            await asyncio.sleep(0.005)

asyncio.run(main())
"""


def test_sigkill_right_after_an_event_keeps_it_and_loses_at_most_the_window(tmp_path: Path) -> None:
    """Telemetry waits in memory for the window (1 s here), events are committed at once: a kill
    -9 right after an event commit keeps the event and loses at most the last window of readings."""
    db, window_s, slack_s = tmp_path / "window.db", 1.0, 2.0
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WINDOW_CHILD), str(db), str(window_s)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    event_seqs: list[int] = []
    telemetry_commits = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lane, seq = map(int, line.split())
            if lane == Lane.TELEMETRY:
                telemetry_commits += 1
            else:
                event_seqs.append(seq)
            if telemetry_commits >= 2 and len(event_seqs) >= 8:
                killed_at = time.time()
                os.kill(proc.pid, signal.SIGKILL)  # right after an event was committed
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Outbox(db) as ob:
        stored = [r.seq for r in ob.peek(Lane.EVENT, limit=10_000)]
        assert event_seqs == stored[: len(event_seqs)]  # every event seen committed is there
        readings = ob.peek(Lane.TELEMETRY, limit=100_000)
    values = [r.record.value for r in readings]  # type: ignore[union-attr]
    assert values == [float(i) for i in range(len(values))]  # lost at the tail only
    lost_s = killed_at - readings[-1].ts
    assert lost_s <= window_s + slack_s, f"the last {lost_s:.2f} s of readings lost (window {window_s} s)"
    # Events did not wait for the window: eight of them in about two windows of telemetry.
    assert telemetry_commits <= 3


LOST_WAL_CHILD = """
import os, signal, sys
from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.store import Outbox
ob = Outbox(sys.argv[1], synchronous=sys.argv[2])
first, _ = ob.append([], [Event("fire-1", "fire", EventState.RAISED, Severity.CRITICAL, 1e9, message="A")])
print(ob.epoch, first, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("loss", ["deleted", "header damaged"])
def test_commits_lost_with_the_wal_never_give_their_seqs_again(tmp_path: Path, loss: str) -> None:
    # A card that ignores fsync, or a damaged -wal: after a kill -9 the file falls back to its last
    # checkpoint. The alarm committed (and possibly sent) as (epoch, seq) is gone from the file;
    # the next row must not be named (epoch, seq) again, or the platform drops it as a duplicate.
    db = tmp_path / "gw.db"
    Outbox(db).close()
    (line,) = run_and_kill(LOST_WAL_CHILD, db, "full", 1)
    epoch, seq = line.split()
    wal = tmp_path / "gw.db-wal"
    assert wal.stat().st_size > 0
    if loss == "deleted":
        wal.unlink()
    else:
        with wal.open("r+b") as f:  # the header's checksum: SQLite then ignores every frame
            f.seek(24)
            f.write(b"\xff\xff\xff\xff")
    with Outbox(db) as ob:
        assert ob.peek(Lane.EVENT) == []  # the commit is lost
        first, _ = ob.append(
            [], [Event("pump-2", "leak", EventState.RAISED, Severity.MINOR, 1e9, message="B")]
        )
        assert (ob.epoch, first) != (epoch, int(seq))
        assert first > int(seq)  # seq never goes back (a consumer that ignores epochs is safe too)
    with Outbox(db) as ob:  # a clean close reserves nothing ahead: seq goes on exactly
        assert ob.append([], [Event("pump-2", "leak", EventState.CLEARED, Severity.INFO, 1e9)]) == (
            first + 1,
            first + 1,
        )
