"""One scanner interface over several BLE stacks, with a watchdog.

`Scanner` owns one backend (chosen by `BleBusConfig.backend`, imported lazily) and delivers every
advertisement to a callback. If nothing is heard for `watchdog_s`, it restarts scanning; if the next
period is silent too, it resets the adapter. Radios and stacks do go deaf (BlueZ discovery stops
after a controller hiccup, USB dongles wedge), and a manhole node that is not heard is an outage.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from citynerve.drivers.ble._config import BleBusConfig
from citynerve.drivers.ble._record import Advertisement, Backend
from citynerve.gateway.api import ChannelError

log = logging.getLogger(__name__)

AdvertCallback = Callable[[Advertisement], None]


class ScannerBackend(ABC):
    """One BLE stack. Calls `deliver` for every advertisement while scanning."""

    def __init__(self, deliver: AdvertCallback, *, bus_id: str) -> None:
        self.deliver = deliver
        self.bus_id = bus_id
        self.bad_adverts = 0  # advertising data that did not parse (counted, dropped)

    @abstractmethod
    async def start(self) -> None:
        """Open the adapter if needed and start scanning. Raises ChannelError."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop scanning (the adapter stays open). Never raises."""

    @abstractmethod
    async def reset_adapter(self) -> None:
        """Reset the adapter (power cycle / HCI reset); `start` afterwards. Raises ChannelError."""

    @abstractmethod
    async def close(self) -> None:
        """Release the adapter. Idempotent, never raises."""


def make_backend(settings: BleBusConfig, deliver: AdvertCallback, *, link: Any = None) -> ScannerBackend:
    """The backend `settings.backend` names; its library is imported here, not before."""
    if settings.backend is Backend.BUMBLE:
        if importlib.util.find_spec("bumble") is None:
            raise ChannelError(
                settings.id,
                "backend 'bumble' needs bumble: on a gateway installed from a release bundle run its "
                "install.py again with --sim; elsewhere pip install 'citynerve[bumble]'",
            )
        from citynerve.drivers.ble._bumble import BumbleBackend

        return BumbleBackend(
            deliver, bus_id=settings.id, transport=settings.transport, link=link, passive=settings.passive
        )
    from citynerve.drivers.ble._bleak import BleakBackend

    return BleakBackend(deliver, bus_id=settings.id, adapter=settings.adapter, passive=settings.passive)


@dataclass(slots=True)
class ScannerStats:
    """What a technician wants to know about a scanner."""

    adverts: int = 0
    restarts: int = 0  # watchdog restarted scanning
    resets: int = 0  # watchdog reset the adapter
    last_heard: float | None = None  # utc time of the last advertisement
    last_error: str = ""


class Scanner:
    """Scans with one backend and watches it. Use as an async context manager, then `run()`."""

    def __init__(
        self,
        settings: BleBusConfig,
        deliver: AdvertCallback,
        *,
        link: Any = None,
        backend: ScannerBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._deliver = deliver
        self._clock = clock
        self.backend = backend or make_backend(settings, self._heard, link=link)
        if backend is not None:
            backend.deliver = self._heard
        self.stats = ScannerStats()
        self._last_heard_mono = clock()
        self._silent_periods = 0
        self._scanning = False

    def _heard(self, advert: Advertisement) -> None:
        self._last_heard_mono = self._clock()
        self._silent_periods = 0  # the radio works: a later silence starts with a restart again
        self.stats.adverts += 1
        self.stats.last_heard = advert.ts
        try:
            self._deliver(advert)
        except Exception:  # a consumer bug must not stop the radio; it is logged with its traceback
            log.exception("bus %s: advertisement consumer failed", self.settings.id)

    @property
    def scanning(self) -> bool:
        return self._scanning

    async def start(self) -> None:
        """Start scanning. Raises ChannelError when the adapter cannot be used."""
        await self.backend.start()
        self._scanning = True
        self._last_heard_mono = self._clock()

    async def stop(self) -> None:
        self._scanning = False
        await self.backend.stop()

    async def close(self) -> None:
        self._scanning = False
        await self.backend.close()

    async def __aenter__(self) -> Scanner:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def watch(self) -> None:
        """Run the watchdog until cancelled. Failures to restart are logged and retried next period."""
        period = self.settings.watchdog_s
        while True:
            await asyncio.sleep(min(period / 4, 5.0))
            await self.check()

    async def check(self) -> None:
        """One watchdog step: escalate if nothing was heard for `watchdog_s`."""
        if self._clock() - self._last_heard_mono < self.settings.watchdog_s:
            return
        self._silent_periods += 1
        try:
            if self._silent_periods % 2 == 1:
                log.warning(
                    "bus %s: nothing heard for %g s, restarting scan",
                    self.settings.id,
                    self.settings.watchdog_s,
                )
                self.stats.restarts += 1
                await self.backend.stop()
                await self.backend.start()
            else:
                log.warning("bus %s: still nothing heard, resetting the adapter", self.settings.id)
                self.stats.resets += 1
                await self.backend.reset_adapter()
                await self.backend.start()
            self._scanning = True
        except ChannelError as err:
            self.stats.last_error = str(err)
            log.warning("bus %s: watchdog could not restart scanning: %s", self.settings.id, err)
        finally:
            # Give the restarted scan a full period before escalating again.
            self._last_heard_mono = self._clock()
