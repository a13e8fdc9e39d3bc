"""bleak backend: BlueZ over D-Bus (Raspberry Pi OS). Passive scanning through BlueZ advertisement
monitors (needs BlueZ >= 5.56 with experimental features); falls back to active scanning, once,
with a warning, where BlueZ refuses it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from citynerve.drivers.ble._record import Advertisement
from citynerve.drivers.ble._scanner import AdvertCallback, ScannerBackend
from citynerve.gateway.api import ChannelError, utc_now

log = logging.getLogger(__name__)

BTHOME_UUID16_LE = b"\xd2\xfc"


class BleakBackend(ScannerBackend):
    """Scans through bleak on adapter `adapter` (e.g. hci0)."""

    def __init__(
        self, deliver: AdvertCallback, *, bus_id: str, adapter: str = "hci0", passive: bool = True
    ) -> None:
        super().__init__(deliver, bus_id=bus_id)
        self.adapter = adapter
        self.passive = passive
        self._scanner: Any = None

    def _on_advertisement(self, device: Any, data: Any) -> None:
        self.deliver(
            Advertisement(
                address=str(device.address).upper(),
                rssi=data.rssi,
                service_data=dict(data.service_data),
                ts=utc_now(),
                local_name=data.local_name,
                platform_data=data,
            )
        )

    def _make(self, passive: bool) -> Any:
        from bleak import BleakScanner
        from bleak.args.bluez import BlueZScannerArgs, OrPattern

        if passive:
            from bleak.assigned_numbers import AdvertisementDataType

            # Passive scanning on BlueZ needs a monitor pattern: match BTHome service data.
            args = BlueZScannerArgs(
                adapter=self.adapter,
                or_patterns=[OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, BTHOME_UUID16_LE)],
            )
            return BleakScanner(self._on_advertisement, scanning_mode="passive", bluez=args)
        return BleakScanner(self._on_advertisement, bluez=BlueZScannerArgs(adapter=self.adapter))

    async def start(self) -> None:
        try:
            from bleak.exc import BleakError
        except ImportError as err:  # pragma: no cover - bleak is a dependency
            raise ChannelError(self.bus_id, "bleak is not installed") from err
        failures: list[str] = []
        for passive in (True, False) if self.passive else (False,):
            try:
                self._scanner = self._make(passive)
                await self._scanner.start()
                return
            except (TimeoutError, BleakError, OSError, ValueError) as err:
                failures.append(f"{'passive' if passive else 'active'}: {err}")
                if passive:
                    log.warning("bus %s: passive scanning refused (%s); scanning actively", self.bus_id, err)
            except Exception as err:  # dbus-fast raises its own errors (no system bus, no BlueZ)
                failures.append(f"{'passive' if passive else 'active'}: {type(err).__name__}: {err}")
        self._scanner = None
        raise ChannelError(self.bus_id, f"BlueZ adapter {self.adapter}: " + "; ".join(failures))

    async def stop(self) -> None:
        if self._scanner is not None:
            with contextlib.suppress(Exception):
                await self._scanner.stop()
            self._scanner = None

    async def reset_adapter(self) -> None:
        """Power-cycle the adapter through BlueZ (org.bluez.Adapter1.Powered off, then on)."""
        await self.stop()
        try:
            from dbus_fast import BusType, Variant
            from dbus_fast.aio import MessageBus

            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            try:
                path = f"/org/bluez/{self.adapter}"
                introspection = await bus.introspect("org.bluez", path)
                obj = bus.get_proxy_object("org.bluez", path, introspection)
                props = obj.get_interface("org.freedesktop.DBus.Properties")
                for powered in (False, True):
                    await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", powered))  # type: ignore[attr-defined]
                    await asyncio.sleep(1.0)
            finally:
                bus.disconnect()
        except Exception as err:
            raise ChannelError(self.bus_id, f"could not reset BlueZ adapter {self.adapter}: {err}") from err

    async def close(self) -> None:
        await self.stop()
