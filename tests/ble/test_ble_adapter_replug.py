"""A BLE bus's adapter missing at start, pulled and plugged back: the same watch as a serial bus's
port where the adapter has a device node to look for (a serial HCI dongle's /dev/ttyACM0, BlueZ's
/sys/class/bluetooth/hci0), and `adapter_missing` in its status while it is gone.

Real peers: bumble's virtual radio and a virtual dongle (a bumble controller) served over a
pseudo-terminal linked into place, the gateway's bumble backend opening `serial:<link>`."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ble_support import KEY, MAC, RecordingSink, manhole_device

from citynerve.drivers.ble import BleBusConfig
from citynerve.drivers.bthome import BTHomeDriver
from citynerve.gateway.bus.owner import BusOwner
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio
from citynerve.hil.sim.ble.dongle import VirtualDongle
from tests.bus.owner_support import running, wait_for

# Without the watch the open is retried at its backoff: 30 s (less up to half) doubling to 300 s.
LONG_BACKOFF = {"backoff_initial_s": 120.0, "backoff_max_s": 300.0}
BACK_WITHIN_S = 8.0


class OwnerSink(RecordingSink):
    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def serial_dongle_bus(link: Path) -> tuple[BusOwner, OwnerSink]:
    bus = BleBusConfig(
        id="ble0", protocol="bthome", backend="bumble", transport=f"serial:{link},1000000", **LONG_BACKOFF
    )
    device = manhole_device(poll_interval_s=60)
    sink = OwnerSink()
    return BusOwner(bus, [device], BTHomeDriver(bus, [device]), sink), sink


async def test_a_ble_bus_whose_serial_dongle_is_missing_at_start_says_so_and_hears_it_when_plugged_in(
    radio: VirtualRadio, tmp_path: Path
) -> None:
    link = tmp_path / "ttyACM0"
    owner, sink = serial_dongle_bus(link)
    node = ManholeCoverNode(radio, MAC, key=KEY)
    # the dongle goes after the owner: a bus closed on a gone dongle waits out bumble's HCI timeout
    async with contextlib.AsyncExitStack() as plugged, running(owner):
        await wait_for(lambda: owner.counters.channel_errors == 1, 5.0, "first open tried")
        assert owner.snapshot()["adapter_missing"] == str(link)
        await plugged.enter_async_context(VirtualDongle(radio, serial_link=link))
        await wait_for(lambda: owner.channel_open, BACK_WITHIN_S, "dongle opened")
        assert owner.snapshot()["adapter_missing"] is None
        await node.state(tilt_deg=1.0)
        await sink.wait_for(lambda: len(sink.batches) >= 1)


async def test_a_ble_bus_whose_serial_dongle_is_pulled_says_so_within_a_second_and_hears_it_back(
    radio: VirtualRadio, tmp_path: Path
) -> None:
    """Pulled while scanning: nothing in the BLE stack raises; the bus looks for the dongle's node
    every second while it listens, so its status says so at once (it stayed "open", its nodes went
    offline as if out of range, and the scan watchdog tried a restart after watchdog_s, 120 s by
    default), and plugged back it is heard within seconds."""
    link = tmp_path / "ttyACM0"
    owner, sink = serial_dongle_bus(link)
    node = ManholeCoverNode(radio, MAC, key=KEY)
    async with contextlib.AsyncExitStack() as plugged, running(owner):
        async with VirtualDongle(radio, serial_link=link):
            await wait_for(lambda: owner.channel_open, 5.0, "dongle opened")
            await node.state(tilt_deg=1.0)
            await sink.wait_for(lambda: len(sink.batches) == 1)
        await wait_for(lambda: owner.snapshot()["adapter_missing"] == str(link), 3.0, "pull seen")
        assert owner.snapshot()["channel"] == "down"
        assert owner.snapshot()["channel_error"] == f"adapter {link} is gone"
        await plugged.enter_async_context(VirtualDongle(radio, serial_link=link))
        await wait_for(lambda: owner.channel_open, BACK_WITHIN_S, "dongle opened again")
        await node.state(tilt_deg=2.0)
        await sink.wait_for(lambda: len(sink.batches) == 2)


def test_the_node_a_ble_bus_looks_for_where_its_adapter_has_one() -> None:
    """BlueZ's adapters (and bumble's HCI socket) are kernel HCI devices, a serial dongle has its
    port; bumble's USB transport finds its dongle by index or vendor id through libusb, and TCP and
    in-process links have no node: those keep the open's backoff (docs/ble.md)."""

    def node(**kw: str) -> str | None:
        return BleBusConfig(id="ble0", protocol="bthome", **kw).adapter_node()

    assert node() == "/sys/class/bluetooth/hci0"
    assert node(adapter="hci1") == "/sys/class/bluetooth/hci1"
    assert node(backend="bumble", transport="serial:/dev/ttyACM0,1000000") == "/dev/ttyACM0"
    assert (
        node(backend="bumble", transport="serial:/dev/serial/by-id/usb-nRF52")
        == "/dev/serial/by-id/usb-nRF52"
    )
    assert node(backend="bumble", transport="hci-socket:1") == "/sys/class/bluetooth/hci1"
    assert node(backend="bumble", transport="hci-socket") == "/sys/class/bluetooth/hci0"
    for transport in ("usb:0", "usb:2FE3:000B", "tcp-client:127.0.0.1:9000", "virtual:sim"):
        assert node(backend="bumble", transport=transport) is None
