"""One bad advert, or one fault of the driver on it, never stops the listener: the other nodes on
the adapter keep their readings. On the bumble virtual radio, with the real driver and bus owner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from ble_support import KEY, MAC, MemoryState, RecordingSink, bus_config, manhole_device

from citynerve.drivers.bthome import BTHomeDriver, RejectReason, codec
from citynerve.gateway.bus.owner import BusOwner
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualAdvertiser, VirtualRadio

SILENT = "A4:C1:38:00:00:02"  # configured, never heard (a flat battery, a node not installed yet)


class OwnerSink(RecordingSink):
    def mark_offline(self, device_id: str, ts: float) -> None:
        return None


async def readings(sink: RecordingSink, n: int) -> None:
    await sink.wait_for(lambda: len(sink.batches) == n)


async def test_empty_service_data_before_any_advert_is_malformed(radio: VirtualRadio, listening: Any) -> None:
    """FCD2 service data with no byte after the UUID, from a configured MAC not heard before."""
    driver, sink = await listening([manhole_device()], MemoryState())
    forger = VirtualAdvertiser(radio, MAC)
    await forger.power_on()
    forger.send_now(b"")
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.state(tilt_deg=2.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    stats = driver.stats()["mh-1"]
    assert stats.rejected == {RejectReason.MALFORMED: 1} and "empty" in stats.last_error
    assert driver.advert_faults == {}


async def test_empty_adverts_spoofing_a_silent_node_do_not_crash_the_bus_owner(
    radio: VirtualRadio, caplog: pytest.LogCaptureFixture
) -> None:
    bus = bus_config(radio, backoff_initial_s=0.1)
    devices = [manhole_device(), manhole_device(mac=SILENT, dev_id="mh-2")]
    sink = OwnerSink()
    owner = BusOwner(bus, devices, BTHomeDriver(bus, devices), sink)
    task = asyncio.create_task(owner.run(), name="test.owner")
    node = ManholeCoverNode(radio, MAC, key=KEY)
    spoof = VirtualAdvertiser(radio, SILENT)
    await spoof.power_on()
    try:
        await asyncio.sleep(0.2)
        for i in range(3):
            spoof.send_now(b"")
            await node.state(tilt_deg=1.0 + i)
            await readings(sink, i + 1)
        assert owner.channel_error in (None, "")
        assert not [r for r in caplog.records if "listener crashed" in r.getMessage()]
        stats = await owner.diag("stats", {})
        assert stats["devices"]["mh-2"]["rejected"] == {"malformed": 3}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_driver_fault_on_one_advert_is_counted_and_the_listener_goes_on(
    radio: VirtualRadio, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever escapes the checks of one advert (here a fault injected into the duplicate check of
    plaintext adverts) is counted by kind and logged once with its traceback; listening goes on."""

    class FaultyDriver(BTHomeDriver):
        def _is_duplicate(self, rt: Any, advert: codec.Advert, payload: bytes, mono: float) -> bool:
            tilt = advert.find("rotation")
            if tilt is not None and tilt.value == 66.0:
                raise KeyError("injected")
            return super()._is_duplicate(rt, advert, payload, mono)

    plain = "A4:C1:38:00:00:09"
    driver = FaultyDriver(bus_config(radio), [manhole_device(mac=plain, key=None, dev_id="mh-plain")])
    await driver.open()
    sink = RecordingSink()
    task = asyncio.create_task(driver.listen(sink), name="test.listen")
    sender = VirtualAdvertiser(radio, plain)
    await sender.power_on()
    try:
        for pid in range(3):  # three bad adverts: one log line, three counted
            sender.send_now(codec.build([(0x00, pid), (0x3F, 66.0)]))
        sender.send_now(codec.build([(0x00, 9), (0x3F, 5.0)]))
        await sink.wait_for(lambda: len(sink.batches) == 1)
        assert not task.done()
        assert driver.advert_faults == {"KeyError": 3}
        assert driver.input_stats()["advert_faults"] == 3
        assert (await driver.diag("stats", {}))["advert_faults"] == {"KeyError": 3}
        assert "KeyError" in driver.stats()["mh-plain"].last_error
        logged = [r for r in caplog.records if "the driver failed on it" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
