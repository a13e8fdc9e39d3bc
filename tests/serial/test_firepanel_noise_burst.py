"""A noise burst without a line end (a replugged cable's NULs, interference's 0xff) and then the
panel's fire alarm line: the noise sticks to the front of the alarm's line. The alarm is raised
whatever the burst's length; the noise is counted as garbage."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from citynerve.drivers.firepanel import FirePanelBusConfig, FirePanelDriver, PanelStream
from citynerve.drivers.serialio.guard import MAX_LINE
from citynerve.gateway.api import Event, EventState, SampleBatch
from citynerve.hil.faults._inputs_support import PanelPort
from tests.serial.test_firepanel import Sink, panel, until

NOISE = (b"\x00", b"\xff")


def alarm(device: int) -> bytes:
    return f"首次火警  08/12/02 17:24  004回路{device:03d}号  感烟探测器  一层大厅东侧\r\n".encode("gb2312")


def raised(items: list[Event | SampleBatch]) -> list[tuple[int, str]]:
    return [
        (e.attrs["device"], e.attrs["location_text"])
        for e in items
        if isinstance(e, Event) and e.kind == "smoke" and e.state is EventState.RAISED
    ]


def test_an_alarm_after_a_noise_burst_of_any_length_is_raised() -> None:
    """Every burst length 0..2000, the alarm in the same read, in 16-byte reads (a USB-serial
    adapter at 9600 baud), and the burst in 64-byte reads before it."""
    line = alarm(4)
    for noise in NOISE:
        for n in range(2001):
            burst = noise * n
            whole = PanelStream(panel())
            assert raised(whole.feed(burst + line)) == [(4, "一层大厅东侧")], (noise, n, "one read")
            chunked = PanelStream(panel())
            out = [item for i in range(0, n, 64) for item in chunked.feed(burst[i : i + 64])]
            for i in range(0, len(line), 16):
                out += chunked.feed(line[i : i + 16])
            assert raised(out) == [(4, "一层大厅东侧")], (noise, n, "chunked")
            # the noise in front of the line's last MAX_LINE bytes is counted, however it was read
            garbage = max(0, n + len(line) - 2 - MAX_LINE)
            assert whole.guard.status()["garbage_bytes"] == garbage, (noise, n)
            assert chunked.guard.status()["garbage_bytes"] == garbage, (noise, n)


def test_an_over_long_line_without_a_record_is_still_garbage() -> None:
    stream = PanelStream(panel())
    assert stream.feed(b"\x00" * 700 + "GST200 V2.31 打印机就绪".encode("gb18030") + b"\r\n") == []
    assert stream.feed(b"a" * 600 + b"\n") == []
    assert stream.guard.status()["garbage_lines"] == 2 and stream.state.lines == 0


def test_the_pending_buffer_stays_bounded() -> None:
    stream = PanelStream(panel())
    for _ in range(1000):
        assert stream.feed(b"\xff" * 100) == []
    assert len(stream._buf) <= 2 * MAX_LINE
    assert stream.guard.status()["garbage_bytes"] >= 100_000 - 2 * MAX_LINE


async def test_alarms_after_noise_bursts_on_a_pty_are_raised(tmp_path: Path) -> None:
    """The real listener on a pty: bursts of 0..2000 bytes, each followed by an alarm for its own
    loop-device (a new RAISED each time)."""
    port = PanelPort(tmp_path)
    bus = FirePanelBusConfig(id="panel-1", protocol="firepanel", port=str(port.link))
    driver = FirePanelDriver(bus, [panel()])
    sink = Sink()
    await driver.open()
    task = asyncio.create_task(driver.listen(sink))
    try:
        device = 0
        for noise in NOISE:
            for n in range(0, 2001, 25):
                device += 1
                await asyncio.to_thread(port.write, noise * n)
                await asyncio.to_thread(port.write, alarm(device))
                await until(lambda d=device: (d, "一层大厅东侧") in raised(list(sink.events)), 5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        port.close()
    assert len(raised(list(sink.events))) == device
    assert driver.input_stats()["garbage_bytes"] > 0
