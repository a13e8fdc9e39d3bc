"""The turnaround a meter gets after its reply: the next request's frame (its first 68) starts no
sooner than `gap_s` after the reply ended, the FE wake-up preamble counting toward it, and the line
is silent for at least one character time before the first FE. Measured on the wire-time simulator
(the peer every serial bench runs against), which timestamps the bytes it hears and sends."""

from __future__ import annotations

import time

import pytest
from serial_support import bus_config, dlt_device

from citynerve.drivers.dlt645 import Dlt645Driver
from citynerve.drivers.serialio import LineTiming, MeterSerialSettings, byte_time_s
from citynerve.drivers.serialio._line import silence_before
from citynerve.hil.sim.serial import SerialMeterBus, SimDlt645Meter

BT = 11 / 2400  # 2400 baud 8E1
FE4 = b"\xfe" * 4


@pytest.mark.parametrize(
    ("request_bytes", "gap_s", "expected"),
    [
        (FE4 + b"\x68\x01", 0.02, BT),  # 20 ms less 18.3 ms of FE: one character of silence
        (b"\x68\x01", 0.02, 0.02),  # no preamble: the whole gap is silence
        (b"\xfe\xfe\x68", 0.02, 0.02 - 2 * BT),
        (b"\xfe" * 8 + b"\x68", 0.02, BT),  # a long preamble: never less than one character
        (FE4 + b"\x68", 0.002, 0.002),  # a gap shorter than a character is kept as set
        (FE4 + b"\x68", 0.0, 0.0),  # gap 0 (tests, benches): no wait
    ],
)
def test_silence_before_a_request(request_bytes: bytes, gap_s: float, expected: float) -> None:
    assert silence_before(request_bytes, LineTiming(gap_s=gap_s), BT) == pytest.approx(expected)


class _TimedBus(SerialMeterBus):
    """The wire-time simulator, noting when each request arrived and when each reply ended."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.heard: list[tuple[float, bytes]] = []
        self.reply_ends: list[float] = []

    def _on_readable(self) -> None:
        before = self.bytes_in
        super()._on_readable()
        if self.bytes_in > before:
            self.heard.append((time.monotonic(), b""))

    async def _send(self, data: bytes, started: float) -> None:
        await super()._send(data, started)
        self.reply_ends.append(time.monotonic())


@pytest.mark.parametrize("preamble", [True, False])
async def test_the_next_frame_starts_gap_s_after_the_reply(preamble: bool) -> None:
    gap_s = 0.02
    meter = SimDlt645Meter("000000000161")
    async with _TimedBus(meters=[meter], baudrate=2400, bits_per_byte=11, wire_time=True) as bus:
        device = dlt_device(preamble=preamble)
        driver = Dlt645Driver(bus_config(bus.port, gap_s=gap_s), [device])
        await driver.open()
        try:
            for request in driver.plan(device):
                await driver.read(device, request)
        finally:
            await driver.close()
        settings = MeterSerialSettings(port=bus.port)
        assert byte_time_s(settings) == pytest.approx(BT)
        # request k+1 was written after reply k ended (the gateway writes a request in one go)
        starts = [t for t, _ in bus.heard]
        assert len(starts) == len(bus.reply_ends) == 4
        wake_up = 4 * BT if preamble else 0.0
        for reply_end, next_start in zip(bus.reply_ends, starts[1:], strict=False):
            silence = next_start - reply_end
            assert silence >= BT - 1e-4  # at least one character of silence before the first byte
            assert silence + wake_up >= gap_s - 1e-4  # the frame's 68 starts gap_s after the reply
