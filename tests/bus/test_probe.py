"""Line relay re-timing, and probes of a live line through the bus owner (polling pauses, the
configured settings come back after)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from citynerve.drivers.dlt645 import Dlt645Device, Dlt645Driver
from citynerve.drivers.dlt645 import codec as dlt
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.bus.probe import PROBE, LineSettings, candidates, conclude
from citynerve.hil.sim.serial import LineRelay, SerialMeterBus, SimDlt645Meter, retime

S9600 = LineSettings(9600, "E", 1)
S2400 = LineSettings(2400, "E", 1)
REQUEST = dlt.build_read("000000000161", 0x00010000, "2007", preamble=True)


def test_same_settings_pass_bytes_unchanged() -> None:
    assert retime(REQUEST, S2400, S2400) == REQUEST
    data = bytes(range(256))
    assert retime(data, LineSettings(9600, "N", 1), LineSettings(9600, "N", 2)) == data


def test_other_baud_rates_garble_deterministically() -> None:
    fast_to_slow = retime(REQUEST, S9600, S2400)
    slow_to_fast = retime(REQUEST, S2400, S9600)
    assert fast_to_slow != REQUEST and slow_to_fast != REQUEST
    assert retime(REQUEST, S9600, S2400) == fast_to_slow  # no randomness in the physics
    assert len(fast_to_slow) < len(REQUEST) < len(slow_to_fast)  # too few / too many characters
    assert dlt.StreamParser().feed(fast_to_slow) == [] and dlt.StreamParser().feed(slow_to_fast) == []


def test_parity_mismatch_reads_as_errors() -> None:
    got = retime(REQUEST, LineSettings(2400, "N", 1), LineSettings(2400, "E", 1))
    # back to back, the receiver takes the next start bit for its stop bit: framing errors (00)
    assert got != REQUEST and got.count(0) > len(got) // 2


def test_candidates_start_with_the_configured_setting() -> None:
    c = candidates(S9600, [2400, 9600], ["N"], [1])
    assert [str(x) for x in c] == ["9600 8E1", "9600 8N1", "2400 8E1", "2400 8N1"]


def test_conclusion_names_configured_and_found() -> None:
    from citynerve.gateway.bus.probe import Trial

    trials = [Trial(S9600, [], [], ["a", "b"], {}), Trial(S2400, ["a", "b"], [], [], {})]
    assert conclude(S9600, trials, 2)["conclusion"] == (
        "configured 9600 8E1, devices answer at 2400 8E1 (all devices answer)"
    )
    garbled = [Trial(S9600, [], ["a"], ["b"], {})]
    assert "something answers at 9600 baud" in conclude(S9600, garbled, 2)["conclusion"]


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def meter_device(address: str) -> Dlt645Device:
    return Dlt645Device.model_validate(
        {
            "id": f"em-{address[-4:]}",
            "bus": "rs485-1",
            "profile": "dlt645-generic",
            "address": address,
            "location": {"address_code": "320508001"},
            "poll_interval_s": 0.1,
            "points": {"energy": {"di": "00010000", "unit": "kWh"}},
        }
    )


@contextlib.asynccontextmanager
async def running(port: str, devices: Sequence[Dlt645Device], baudrate: int) -> AsyncIterator[BusOwner]:
    bus = SerialBusConfig(
        id="rs485-1",
        protocol="dlt645",
        port=port,
        baudrate=baudrate,
        parity="E",
        timeout_s=0.3,
        gap_s=0.0,
        retries=0,
        offline_after=2,
        backoff_initial_s=0.2,
        backoff_max_s=0.4,
    )
    owner = BusOwner(bus, devices, Dlt645Driver(bus, devices), Sink())
    task = asyncio.create_task(owner.run(), name="test.owner")
    try:
        yield owner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


async def test_probe_through_the_owner_finds_the_meters_speed_and_restores_polling() -> None:
    meters = [SimDlt645Meter(f"00000000016{i}") for i in range(1, 4)]
    devices = [meter_device(m.address) for m in meters]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400) as sim,
        LineRelay([(sim.port, S2400)]) as relay,
        running(relay.port, devices, baudrate=9600) as owner,
    ):
        await until(lambda: owner.snapshot()["verdict"]["cause"] == "line_silent")
        assert "configured " + relay.port + " 9600 8E1" in owner.snapshot()["verdict"]["reason"]
        result: dict[str, Any] = await owner.diag(PROBE, {"bauds": [9600, 4800, 2400], "timeout_s": 0.3})
        assert result["conclusion"] == "configured 9600 8E1, devices answer at 2400 8E1 (all devices answer)"
        assert result["fix"] == {"baudrate": 2400, "parity": "E", "stopbits": 1}
        tried = [t["settings"] for t in result["trials"]]
        assert tried[0] == "9600 8E1" and tried[-1] == "2400 8E1"
        assert set(result["trials"][-1]["answered"]) == {d.id for d in devices}
        # any diag action at other settings, then back to the configured ones
        at_2400 = await owner.diag(
            "read-di", {"address": "000000000161", "di": "00010000", "settings": {"baudrate": 2400}}
        )
        assert at_2400["settings"] == "2400 8E1" and at_2400["address"] == "000000000161"
        before = owner.counters.transactions
        await until(lambda: owner.counters.transactions > before + 3)
        assert owner.channel_open and owner.snapshot()["verdict"]["cause"] == "line_silent"
