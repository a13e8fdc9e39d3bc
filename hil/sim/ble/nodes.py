"""Simulated BTHome nodes: a generic one, and a manhole cover speaking the device_fw wire format.

They build payloads with the gateway's codec (citynerve.drivers.bthome.codec.build): the *firmware's* own
bytes are checked separately, by running device_fw under MicroPython (tests/device_fw).
"""

from __future__ import annotations

from collections.abc import Sequence

from citynerve.drivers.bthome.codec import Scalar, build
from citynerve.hil.sim.ble.advertiser import VirtualAdvertiser, VirtualRadio


class BTHomeNode:
    """A BTHome node: objects in, service data out, counter and packet id kept like a real node."""

    def __init__(
        self, radio: VirtualRadio, mac: str, *, key: bytes | None = None, counter: int = 1, name: str = ""
    ) -> None:
        self.advertiser = VirtualAdvertiser(radio, mac, name=name)
        self.mac = mac.upper()
        self.key = key
        self.counter = counter
        self.packet_id = 0

    def payload(self, objects: Sequence[tuple[int, Scalar]]) -> bytes:
        """Next payload for `objects`: plaintext gets a packet id (for dedupe); encrypted ones the
        counter instead, which does the same job and leaves room in the 31 bytes."""
        if self.key is None:
            self.packet_id = (self.packet_id + 1) & 0xFF
            return build([(0x00, self.packet_id), *objects])
        data = build(list(objects), mac=self.mac, key=self.key, counter=self.counter)
        self.counter += 1
        return data

    async def report(
        self, objects: Sequence[tuple[int, Scalar]], *, repeats: int = 3, interval_ms: float = 20.0
    ) -> bytes:
        """Advertise one reading as a short burst of identical adverts; returns the payload."""
        data = self.payload(objects)
        await self.advertiser.send(data, repeats=repeats, interval_ms=interval_ms)
        return data

    async def close(self) -> None:
        await self.advertiser.close()


class ManholeCoverNode(BTHomeNode):
    """A manhole-cover node: the object set device_fw sends (see device_fw/README.md)."""

    def objects(
        self,
        *,
        tilt_deg: float,
        water_mm: int = 0,
        battery_pct: int = 95,
        voltage_v: float = 3.0,
        tilt_alarm: bool = False,
        water_high: bool = False,
        tamper: bool = False,
    ) -> list[tuple[int, Scalar]]:
        return [
            (0x01, battery_pct),
            (0x0C, voltage_v),
            (0x11, tilt_alarm),
            (0x20, water_high),
            (0x2B, tamper),
            (0x3F, tilt_deg),
            (0x40, water_mm),
        ]

    async def state(self, **kwargs: float | int | bool) -> bytes:
        """Advertise the node's state (see `objects` for the keyword arguments)."""
        return await self.report(self.objects(**kwargs))  # type: ignore[arg-type]
