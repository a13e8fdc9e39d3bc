"""A listening serial bus under a garbage flood: a pty written at full speed for 3 s. Garbage is
counted and logged once per interval, never delivered line by line; a real fire alarm in the middle
of the flood is still parsed and raised."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest

from citynerve.drivers.firepanel import FirePanelBusConfig, FirePanelDriver
from citynerve.drivers.serialio.guard import RAW_BURST, RAW_PER_S, LineGuard, is_text
from citynerve.gateway.api import EventState
from citynerve.hil.faults._inputs_support import PanelPort, garbage_flood
from tests.serial.test_firepanel import GOLDEN, Sink, panel, until


def test_guard_sorts_lines() -> None:
    now = [0.0]
    g = LineGuard("panel p", raw_per_s=1.0, raw_burst=2, clock=lambda: now[0])
    assert g.text_ok(b"short text", "short text")
    assert not g.text_ok(b"\x01\x02\x03abc", "\x01\x02\x03abc")  # mostly control characters
    assert not is_text("ab\ufffdcd") and is_text("首次火警 一层大厅")
    assert [g.admit_raw(5) for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    assert g.admit_raw(5) and not g.admit_raw(5)
    assert g.status() == {"garbage_lines": 3, "garbage_bytes": 6 + 5 + 5, "raw_dropped": 2}


async def test_garbage_flood_on_a_pty_is_counted_not_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="citynerve.drivers.serialio.guard")
    port = PanelPort(tmp_path)
    bus = FirePanelBusConfig(id="panel-1", protocol="firepanel", port=str(port.link))
    driver = FirePanelDriver(bus, [panel()])
    sink = Sink()
    await driver.open()
    task = asyncio.create_task(driver.listen(sink))
    try:
        started = time.monotonic()
        flood = garbage_flood(port, 3.0)
        await asyncio.sleep(1.5)
        # The panel's real alarm, mid-flood (from a thread: the pty is full, a write would block).
        await asyncio.to_thread(port.write, b"\r\n" + (GOLDEN + "\r\n").encode("gb2312"))
        await asyncio.to_thread(flood.join)
        await until(lambda: driver.input_stats()["garbage_lines"] > 1000, 10.0)
        await until(lambda: any(e.kind == "smoke" for e in sink.events), 10.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        port.close()
    elapsed = time.monotonic() - started
    raw = [s for b in sink.batches for s in b.samples if s.point == "raw"]
    # Unparsed text at most the burst plus 1/s over the flood (junk text, or a printable scrap of
    # the noise between two line ends); the rest is counted.
    assert len(raw) <= RAW_BURST + RAW_PER_S * elapsed + 1, (len(raw), elapsed)
    assert [(e.kind, e.state) for e in sink.events] == [("smoke", EventState.RAISED)]
    stats = driver.input_stats()
    assert stats["garbage_bytes"] > 100_000 and stats["raw_dropped"] > 0
    assert len(caplog.records) == 1  # one summary line per minute, however much garbage
    status = (await driver.diag("status", {}))["panels"][0]
    assert status["garbage_lines"] == stats["garbage_lines"]
