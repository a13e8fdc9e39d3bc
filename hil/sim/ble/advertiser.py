"""A virtual radio (bumble LocalLink) and advertisers on it: real bumble controllers and hosts,
real HCI commands and LE advertising PDUs, no radio."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address, OwnAddressType
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from citynerve.drivers.ble import build_ad_structures, register_virtual_link, unregister_virtual_link

BTHOME_UUID16 = 0xFCD2


class VirtualRadio:
    """One shared virtual link. As a context manager it registers itself as `virtual:<name>`."""

    def __init__(self, name: str = "sim") -> None:
        self.name = name
        self.link = LocalLink()

    @property
    def transport(self) -> str:
        """The bumble transport string for a bus config that scans this radio."""
        return f"virtual:{self.name}"

    def __enter__(self) -> VirtualRadio:
        register_virtual_link(self.name, self.link)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        unregister_virtual_link(self.name)


class VirtualAdvertiser:
    """A BLE peripheral with a public MAC that advertises raw service data on a VirtualRadio.

    bumble's virtual controller relays connectable undirected adverts (ADV_IND), so that is what
    it sends; a real node uses non-connectable adverts, which carry the same bytes.
    """

    def __init__(self, radio: VirtualRadio, mac: str, *, name: str = "") -> None:
        self.radio = radio
        self.mac = mac.upper()
        self.local_name = name
        self.controller = Controller(f"node-{self.mac}", link=radio.link, public_address=self.mac)
        self.device = Device(
            name=name or "node",
            address=Address(self.mac),
            host=Host(self.controller, AsyncPipeSink(self.controller)),
        )
        self._powered = False
        self.sent = 0

    async def power_on(self) -> None:
        if not self._powered:
            await self.device.power_on()
            self._powered = True

    def ad_data(self, service_data: bytes, uuid16: int = BTHOME_UUID16) -> bytes:
        """Advertising data as a BTHome node sends it: no flags (a broadcaster needs none and the
        31 bytes are tight with encryption), the service data, the name if any."""
        return build_ad_structures({uuid16: service_data}, flags=None, name=self.local_name)

    async def advertise(
        self, service_data: bytes, *, interval_ms: float = 100.0, uuid16: int = BTHOME_UUID16
    ) -> None:
        """Start (or change) advertising `service_data` every `interval_ms` until `stop()`."""
        await self.advertise_raw(self.ad_data(service_data, uuid16), interval_ms=interval_ms)

    async def advertise_raw(self, data: bytes, *, interval_ms: float = 100.0) -> None:
        """Start (or change) advertising raw advertising data (AD structures) until `stop()`."""
        await self.power_on()
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        await self.device.start_advertising(
            advertising_data=data,
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
            own_address_type=OwnAddressType.PUBLIC,
        )
        self.sent += 1

    async def send(self, service_data: bytes, *, repeats: int = 1, interval_ms: float = 20.0) -> None:
        """Advertise `service_data` about `repeats` times, then stop (one burst of one reading)."""
        await self.send_raw(self.ad_data(service_data), repeats=repeats, interval_ms=interval_ms)

    async def send_raw(self, data: bytes, *, repeats: int = 1, interval_ms: float = 20.0) -> None:
        """Advertise raw advertising data about `repeats` times, then stop."""
        await self.advertise_raw(data, interval_ms=interval_ms)
        await asyncio.sleep(max(repeats - 0.5, 0.5) * interval_ms / 1000)
        await self.stop()

    def send_now(self, service_data: bytes, *, uuid16: int = BTHOME_UUID16) -> None:
        """Put exactly one advertising PDU on the link now (benchmarks: one PDU, one reading)."""
        from bumble import ll

        data = self.ad_data(service_data, uuid16)
        self.controller.send_advertising_pdu(ll.AdvInd(advertiser_address=Address(self.mac), data=data))
        self.sent += 1

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(KeyError):
            self.radio.link.remove_controller(self.controller)
