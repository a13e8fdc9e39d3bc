"""A node whose accelerometer reads no gravity (a dead LIS3DH that still answers WHO_AM_I) must show
on the gateway as a sensor fault a technician sees, never as a closed cover at 0 deg.

The adverts come from the firmware itself under MicroPython (device_fw, firmware in the loop); the
whole gateway (`citynerve run`, a separate process, the shipped bthome-manhole-cover profile) hears
them through a virtual HCI dongle and writes what it makes of them to its outbox."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from ble_support import CITYNERVE, MAC, run_config

from citynerve.gateway.api import EventState
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.hil.sim.ble import VirtualAdvertiser, VirtualDongle, VirtualRadio, run_scenario

DEAD = [0.0, 0.0, 0.0]


async def _stored(db: Path) -> tuple[list[object], list[object]]:
    """Events and readings in the running gateway's outbox (read beside it, as `outbox peek` does)."""
    outbox = AsyncOutbox(db)
    await outbox.open()
    try:
        events = [r.record for r in await outbox.peek(Lane.EVENT, limit=1000)]
        readings = [r.record for r in await outbox.peek(Lane.TELEMETRY, limit=10_000)]
    finally:
        await outbox.close()
    return events, readings


def _tilt_stored(value: float) -> Callable[[Path], Awaitable[bool]]:
    async def check(db: Path) -> bool:
        _, readings = await _stored(db)
        return any(getattr(r, "point", "") == "tilt" and getattr(r, "value", None) == value for r in readings)

    return check


def _fault_is(n: int) -> Callable[[Path], Awaitable[bool]]:
    async def check(db: Path) -> bool:
        events, _ = await _stored(db)
        return len([e for e in events if getattr(e, "kind", "") == "node_sensor_fault"]) >= n

    return check


async def test_dead_accelerometer_is_a_sensor_fault_on_the_gateway(tmp_path: Path) -> None:
    fw = run_scenario(
        {
            "mac": MAC.replace(":", "").lower(),
            # closed; the sensor dies (two wakes); replaced, the cover closed at 4 deg (1 deg deadband)
            "boots": [{"tilt": 2.0}, {"accel": DEAD}, {"accel": DEAD}, {"tilt": 4.0}],
        },
        workdir=str(tmp_path),
    )
    assert len(fw) == 4
    with VirtualRadio("gw-fault") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = run_config(tmp_path, dongle.client_transport, "gw-ble-fault")
            proc = await asyncio.create_subprocess_exec(
                CITYNERVE,
                "run",
                "-c",
                str(cfg),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            node = VirtualAdvertiser(radio, MAC)
            try:
                async with asyncio.timeout(30):
                    while not (tmp_path / "gw.sock").exists():
                        assert proc.returncode is None
                        await asyncio.sleep(0.1)
                # Each advert until the gateway has stored what it makes of it (the bus owner may
                # not have opened the dongle yet; a repeat is a duplicate, dropped): no timing luck.
                steps = (_tilt_stored(2.0), _fault_is(1), None, _fault_is(2))
                for advert, done in zip(fw, steps, strict=True):
                    async with asyncio.timeout(30):
                        while True:
                            assert proc.returncode is None
                            await node.send_raw(advert.adv, repeats=3)
                            if done is None or await done(tmp_path / "gw.db"):
                                break
                            await asyncio.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await node.close()
    stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    events, readings = await _stored(tmp_path / "gw.db")
    faults = [e for e in events if getattr(e, "kind", "") == "node_sensor_fault"]
    assert [e.state for e in faults] == [EventState.RAISED, EventState.CLEARED], stderr[-3000:]  # type: ignore[attr-defined]
    assert faults[0].device_id == "mh-1"  # type: ignore[attr-defined]
    tilts = [getattr(r, "value", None) for r in readings if getattr(r, "point", "") == "tilt"]
    assert tilts == [2.0, 4.0]  # no made-up 0 deg while the sensor was dead
    assert not [e for e in events if getattr(e, "kind", "") == "manhole_tilt"]
