"""bumble backend: bumble's own BLE host over an HCI transport (USB or serial dongle, no BlueZ), or
a controller on an in-process virtual link shared with simulated advertisers (tests, hil/sim/ble)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from bumble.controller import Controller
from bumble.device import Advertisement as BumbleAdvertisement
from bumble.device import Device
from bumble.hci import Address, HCI_LE_Advertising_Report_Event, HCI_LE_Extended_Advertising_Report_Event
from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from citynerve.drivers.ble._record import AdStructureError, Advertisement, parse_ad_structures
from citynerve.drivers.ble._scanner import AdvertCallback, ScannerBackend
from citynerve.drivers.ble._virtual import virtual_link
from citynerve.gateway.api import ChannelError, utc_now

log = logging.getLogger(__name__)

_SCANNER_ADDRESSES = (f"F0:CA:FE:00:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}" for i in itertools.count(1))

STOP_SCAN_S = 2.0
"""How long stopping a scan may take: a live controller answers in milliseconds; a pulled dongle
never does, and bumble would wait out its HCI command timeout (10 s) before the bus can reopen."""

ACCUMULATORS_MAX = 256
"""Advertisers whose advert may still be merged with its scan response (active scanning only)."""


class _ScanningDevice(Device):
    """bumble's Device, without its per-advertiser memory growing for the whole scan.

    bumble keeps one AdvertisementDataAccumulator (~1 KiB) per advertiser address for as long as a
    scan runs, to merge an advert with its scan response; phones rotate random addresses every few
    minutes and the watchdog never restarts a scan that hears adverts, so the dict would grow
    without end. A passive scan has no scan responses to wait for: the accumulator is dropped after
    each report. An active scan keeps the most recently heard ACCUMULATORS_MAX.
    """

    def on_advertising_report(
        self,
        report: HCI_LE_Advertising_Report_Event.Report | HCI_LE_Extended_Advertising_Report_Event.Report,
    ) -> None:
        super().on_advertising_report(report)
        accumulators = self.advertisement_accumulators
        accumulator = accumulators.pop(report.address, None)
        if accumulator is None or self.scanning_is_passive:
            return
        accumulators[report.address] = accumulator  # now the most recently heard
        while len(accumulators) > ACCUMULATORS_MAX:
            del accumulators[next(iter(accumulators))]


class BumbleBackend(ScannerBackend):
    """Scans through bumble. `link` (a bumble LocalLink) wins over `transport`."""

    def __init__(
        self,
        deliver: AdvertCallback,
        *,
        bus_id: str,
        transport: str = "",
        link: Any = None,
        passive: bool = True,
    ) -> None:
        super().__init__(deliver, bus_id=bus_id)
        self.transport_name = transport
        self.passive = passive
        self._link = link
        self._device: Device | None = None
        self._controller: Controller | None = None
        self._transport: Transport | None = None
        self._address = next(_SCANNER_ADDRESSES)

    def _resolve_link(self) -> Any:
        if self._link is not None:
            return self._link
        if self.transport_name.startswith("virtual:"):
            name = self.transport_name.removeprefix("virtual:")
            link = virtual_link(name)
            if link is None:
                raise ChannelError(self.bus_id, f"no virtual link named {name!r} is registered")
            return link
        return None

    async def _power_on(self) -> Device:
        link = self._resolve_link()
        try:
            if link is not None:
                self._controller = Controller("citynerve-scanner", link=link, public_address=self._address)
                host = Host(self._controller, AsyncPipeSink(self._controller))
                device: Device = _ScanningDevice(name="citynerve", address=Address(self._address), host=host)
            else:
                self._transport = await open_transport(self.transport_name)
                device = _ScanningDevice.with_hci(
                    "citynerve", Address(self._address), self._transport.source, self._transport.sink
                )
            device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
            await device.power_on()  # sends HCI_Reset: this is also how the adapter gets reset
        except ChannelError:
            raise
        except Exception as err:  # bumble raises plain exceptions (OSError, ValueError, its own)
            await self._teardown()
            raise ChannelError(self.bus_id, f"bumble transport {self.transport_name!r}: {err}") from err
        self._device = device
        return device

    def _on_advertisement(self, adv: BumbleAdvertisement) -> None:
        if self.passive and adv.is_scan_response:
            # A passive scan sends no scan requests, so there are no real scan responses to hear;
            # bumble's virtual controller reports one per advert anyway, a copy of the advert.
            return
        try:
            service_data, name = parse_ad_structures(adv.data_bytes)
        except AdStructureError:
            self.bad_adverts += 1
            return
        self.deliver(
            Advertisement(
                address=adv.address.to_string(False).upper(),
                rssi=None if adv.rssi == adv.RSSI_NOT_AVAILABLE else int(adv.rssi),
                service_data=service_data,
                ts=utc_now(),
                local_name=name,
                platform_data=adv,
            )
        )

    async def start(self) -> None:
        device = self._device or await self._power_on()
        try:
            await device.start_scanning(active=not self.passive, filter_duplicates=False)
        except Exception as err:
            raise ChannelError(self.bus_id, f"bumble could not start scanning: {err}") from err

    async def stop(self) -> None:
        if self._device is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_SCAN_S):
                    await self._device.stop_scanning()

    async def reset_adapter(self) -> None:
        await self._teardown()
        await self._power_on()

    async def _teardown(self) -> None:
        await self.stop()
        self._device = None
        if self._controller is not None:
            with contextlib.suppress(KeyError, AttributeError):
                self._controller.link.remove_controller(self._controller)
            self._controller = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
            self._transport = None

    async def close(self) -> None:
        await self._teardown()
