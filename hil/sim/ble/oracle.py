"""Home Assistant's `bthome-ble` parser as a test oracle (a test-only dependency, imported lazily).

`bthome_ble_values(service_data, mac, key)` returns what that parser makes of one payload, keyed
the way it names things (`temperature`, `rotation`, `opening`, `distance`, ...; repeated objects
get `_1`, `_2`; binary sensors are prefixed `binary:`). Not for runtime use: it pulls in much
of Home Assistant's Bluetooth stack.
"""

from __future__ import annotations

import time
from typing import Any

UUID128 = "0000fcd2-0000-1000-8000-00805f9b34fb"


class OracleParser:
    """One bthome-ble device parser (it keeps counter and packet-id state, like ours)."""

    def __init__(self, key: bytes | None = None) -> None:
        from bthome_ble import BTHomeBluetoothDeviceData

        self.device = BTHomeBluetoothDeviceData(bindkey=key)

    def values(self, service_data: bytes, mac: str, *, ts: float | None = None) -> dict[str, Any]:
        from bleak.backends.device import BLEDevice
        from habluetooth import BluetoothServiceInfoBleak

        info = BluetoothServiceInfoBleak(
            name="node",
            address=mac,
            rssi=-60,
            manufacturer_data={},
            service_data={UUID128: service_data},
            service_uuids=[UUID128],
            source="local",
            device=BLEDevice(mac, "node", {}),
            advertisement=None,
            connectable=False,
            time=time.monotonic() if ts is None else ts,
            tx_power=None,
        )
        update = self.device.update(info)
        out: dict[str, Any] = {k.key: v.native_value for k, v in update.entity_values.items()}
        # Binary sensors share names with sensors (moisture %, moisture detected): keep both.
        out.update({f"binary:{k.key}": v.native_value for k, v in update.binary_entity_values.items()})
        out.update({f"event:{k.key}": v.event_type for k, v in update.events.items()})
        out.pop("signal_strength", None)
        return out


def bthome_ble_values(service_data: bytes, mac: str, key: bytes | None = None) -> dict[str, Any]:
    """What bthome-ble decodes from one payload, with a fresh parser."""
    return OracleParser(key).values(service_data, mac)
