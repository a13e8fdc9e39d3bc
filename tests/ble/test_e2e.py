"""End to end: adverts made by the firmware under MicroPython, sent by a bumble virtual device,
heard through the bumble backend, decoded by the bthome driver, through the pipeline into the
SQLite outbox. Forged, replayed and malformed adverts in between are refused and counted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ble_support import KEY, MAC, bus_config, manhole_device

from citynerve.drivers.bthome import BTHomeDriver, RejectReason, codec
from citynerve.drivers.bthome.replay import counter_key, key_fingerprint
from citynerve.gateway.api import EventState, Reading
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter
from citynerve.hil.sim.ble import VirtualAdvertiser, VirtualRadio, run_scenario


async def _rows(outbox: AsyncOutbox, lane: Lane) -> list[object]:
    return [r.record for r in await outbox.peek(lane, limit=10_000)]


async def _tilt_events(outbox: AsyncOutbox) -> list[object]:
    return [e for e in await _rows(outbox, Lane.EVENT) if getattr(e, "kind", "") == "manhole_tilt"]


async def test_firmware_to_outbox(radio: VirtualRadio, tmp_path: Path) -> None:
    # 1. The node's firmware, under MicroPython: closed, lifted (tilt held > 2 s), closed again
    #    after a power loss (the counter must still move on).
    fw = run_scenario(
        {
            "mac": MAC.replace(":", "").lower(),
            "boots": [
                {"tilt": 2.0, "water_v": 0.15},
                {"tilt": 38.0, "water_v": 0.15},
                {"tilt": 1.0, "water_v": 0.15, "power_loss": True},
            ],
        },
        workdir=str(tmp_path),
    )
    assert [a.tilt_alarm for a in fw] == [False, True, False]

    # 2. The gateway side: the real outbox (also the driver's state store), pipeline, driver.
    outbox = AsyncOutbox(tmp_path / "outbox.db")
    await outbox.open()
    committed = asyncio.Event()
    outbox.on_commit(lambda lane, seq: committed.set())
    device = manhole_device()
    writer = OutboxWriter(outbox, max_latency_s=0.05)
    pipeline = Pipeline({device.id: device}, writer)
    driver = BTHomeDriver(bus_config(radio), [device], outbox)
    await driver.open()
    tasks = [
        asyncio.create_task(writer.run(), name="test.writer"),
        asyncio.create_task(driver.listen(pipeline), name="test.listen"),
    ]
    node = VirtualAdvertiser(radio, MAC)
    attacker = VirtualAdvertiser(radio, MAC)
    await attacker.power_on()
    try:
        await node.send_raw(fw[0].adv, repeats=3)
        # forged "cover closed" with a guessed key, and plaintext
        attacker.send_now(codec.build([(0x11, False), (0x3F, 0.0)], mac=MAC, key=bytes(16), counter=10**6))
        attacker.send_now(codec.build([(0x11, False), (0x3F, 0.0)]))
        await node.send_raw(fw[1].adv, repeats=3)  # the cover is lifted
        await asyncio.sleep(0.05)
        attacker.send_now(fw[0].service_data)  # replay of the old "closed" advert
        attacker.send_now(b"\x41\x3f")  # malformed
        await node.send_raw(fw[2].adv, repeats=3)

        async with asyncio.timeout(10):
            while len(await _tilt_events(outbox)) < 2:
                committed.clear()
                if len(await _tilt_events(outbox)) >= 2:
                    break
                await committed.wait()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await driver.close()

    events = await _tilt_events(outbox)
    assert [e.state for e in events] == [EventState.RAISED, EventState.CLEARED]  # type: ignore[attr-defined]
    readings = [r for r in await _rows(outbox, Lane.TELEMETRY) if isinstance(r, Reading)]
    tilts = [r.value for r in readings if r.point == "tilt"]
    assert tilts == [2.0, 38.0, 1.0]
    water = {r.value for r in readings if r.point == "water_level"}
    assert water == {150}
    assert {r.unit for r in readings if r.point == "tilt"} == {"°"}

    stats = driver.stats()["mh-1"]
    assert stats.accepted == 3
    assert stats.rejected[RejectReason.WRONG_KEY] == 1
    assert stats.rejected[RejectReason.UNENCRYPTED] == 1
    assert stats.rejected[RejectReason.REPLAY] == 1
    assert stats.rejected[RejectReason.MALFORMED] == 1
    # the last accepted counter is in the store, for the next gateway start
    last = codec.parse(fw[2].service_data, mac=MAC, key=KEY).counter
    assert await outbox.get(counter_key(MAC, key_fingerprint(KEY))) == str(last)
    await outbox.close()
