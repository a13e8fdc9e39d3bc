"""One BTHome node's key file cannot be read (31 hex digits): that node is faulted and offline on its
own, named with its file; the other nodes on the same adapter go on. Opening the bus read every
node's key and the first bad one kept the whole BLE bus down ("channel down: : devices[mh-1].key_file:
... non-hexadecimal number found in fromhex() arg at position 31"), taking nodes with good keys
offline too."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ble_support import KEY, MAC, bus_config, manhole_device
from test_bus_owner import OwnerSink

from citynerve.drivers.bthome import BTHomeDriver
from citynerve.gateway.api import EventState
from citynerve.gateway.bus.owner import BusOwner
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio

MAC2 = "A4:C1:38:00:00:02"
KEY2 = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


async def test_a_bad_key_file_faults_its_node_only(tmp_path: Path, radio: VirtualRadio) -> None:
    bad, good = tmp_path / "mh1.key", tmp_path / "mh2.key"
    bad.write_text(KEY.hex()[:31] + "\n")
    good.write_text(KEY2.hex() + "\n")
    bad.chmod(0o600)
    good.chmod(0o600)
    devices = [
        manhole_device(MAC, key=None, key_file=str(bad), dev_id="mh-1", poll_interval_s=60),
        manhole_device(MAC2, key=None, key_file=str(good), dev_id="mh-2", poll_interval_s=60),
    ]
    bus = bus_config(radio, offline_after=3, backoff_initial_s=0.1)
    driver = BTHomeDriver(bus, devices)
    sink = OwnerSink()
    owner = BusOwner(bus, devices, driver, sink)
    task = asyncio.create_task(owner.run(), name="test.owner")
    nodes = [ManholeCoverNode(radio, MAC, key=KEY), ManholeCoverNode(radio, MAC2, key=KEY2)]
    try:
        await sink.wait_for(lambda: owner.channel_open or owner.channel_error is not None)
        for tilt in (1.0, 2.0):
            for node in nodes:
                await node.state(tilt_deg=tilt)
        await sink.wait_for(lambda: {b.device_id for b in sink.batches} == {"mh-2"})
        await sink.wait_for(lambda: any(e.kind == "device_fault" for e in sink.events))
        snap = owner.snapshot()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert snap["channel"] == "open" and snap["channel_error"] is None, snap
    assert {b.device_id for b in sink.batches} == {"mh-2"}
    (fault,) = [e for e in sink.events if e.kind == "device_fault"]
    assert fault.device_id == "mh-1" and fault.state is EventState.RAISED
    assert sink.offline == ["mh-1"]
    mh1, mh2 = snap["devices"]
    assert mh2["state"] == "online", mh2
    assert mh1["state"] == "offline" and mh1["cause"] == "device_fault", mh1
    for text in (fault.message, mh1["reason"], mh1["last_error"]):
        assert str(bad) in text and "devices[mh-1].key_file" in text, text
        assert "31 hex digits, expected 32" in text and ": :" not in text and "fromhex" not in text, text
        assert KEY.hex()[:31] not in text  # never the key itself


def test_a_key_file_saved_with_a_bom_gives_the_key(tmp_path: Path) -> None:
    """Notepad's UTF-8 BOM and CRLF around the 32 hex digits: the key, as every other secret file."""
    saved = tmp_path / "mh1.key"
    saved.write_bytes(b"\xef\xbb\xbf" + KEY.hex().encode() + b"\r\n")
    saved.chmod(0o600)
    assert manhole_device(MAC, key=None, key_file=str(saved)).resolve_key() == KEY
