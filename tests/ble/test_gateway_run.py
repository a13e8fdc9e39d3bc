"""The whole gateway (`citynerve run`, a separate process) hears a simulated manhole node through
a virtual HCI dongle: readings and the tilt alarm land in its outbox; a forged advert does not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

from ble_support import CITYNERVE, KEY, MAC, run_config

from citynerve.drivers.bthome import codec
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualAdvertiser, VirtualDongle, VirtualRadio


async def test_citynerve_run_hears_the_node(tmp_path: Path) -> None:
    with VirtualRadio("gw-run") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = run_config(tmp_path, dongle.client_transport, "gw-ble-test")
            proc = await asyncio.create_subprocess_exec(
                CITYNERVE,
                "run",
                "-c",
                str(cfg),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            node = ManholeCoverNode(radio, MAC, key=KEY)
            forger = VirtualAdvertiser(radio, MAC)
            try:
                async with asyncio.timeout(30):
                    while not (tmp_path / "gw.sock").exists():
                        assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # the bus owner opens the dongle
                for _ in range(3):
                    await node.state(tilt_deg=2.0, water_mm=90)
                    await asyncio.sleep(0.3)
                await forger.send(codec.build([(0x11, False), (0x3F, 0.0)]), repeats=3)
                await node.state(tilt_deg=50.0, tilt_alarm=True)
                # a technician's scan goes through the running gateway (it owns the dongle)
                await node.advertiser.advertise(node.payload(node.objects(tilt_deg=49.0, tilt_alarm=True)))
                scan = await asyncio.create_subprocess_exec(
                    CITYNERVE,
                    "diag",
                    "ble",
                    "scan",
                    "-c",
                    str(cfg),
                    "--duration",
                    "1",
                    "--json",
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                scan_out, scan_err = await asyncio.wait_for(scan.communicate(), 30)
                await node.advertiser.stop()
                await asyncio.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await node.close()
                await forger.close()
    stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    outbox = AsyncOutbox(tmp_path / "gw.db")
    await outbox.open()
    try:
        events = [r.record for r in await outbox.peek(Lane.EVENT, limit=1000)]
        readings = [r.record for r in await outbox.peek(Lane.TELEMETRY, limit=10_000)]
    finally:
        await outbox.close()
    assert scan.returncode == 0, scan_err.decode()
    scanned = json.loads(scan_out)
    assert scanned["route"] == "gateway"
    (seen,) = scanned["devices"]
    assert seen["device_id"] == "mh-1" and seen["values"]["rotation"] == 49.0
    tilt_events = [e for e in events if getattr(e, "kind", "") == "manhole_tilt"]
    assert len(tilt_events) == 1, stderr[-3000:]
    assert tilt_events[0].attrs.get("component_code") == "3205080101000001"  # type: ignore[attr-defined]
    tilts = [getattr(r, "value", None) for r in readings if getattr(r, "point", "") == "tilt"]
    assert 50.0 in tilts and 0.0 not in tilts  # the forged plaintext "closed" never got in
