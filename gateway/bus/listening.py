"""Listening buses (a fire panel's print stream, a BLE adapter): the driver reports as devices speak;
a watchdog on the monotonic clock marks devices that went silent offline. Split from `owner.py`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import (
    ChannelError,
    Event,
    GatewayError,
    ListenDriver,
    SampleBatch,
    stop_task,
)
from citynerve.gateway.bus.adapter import ADAPTER_CHECK_S

if TYPE_CHECKING:
    from citynerve.gateway.bus.owner import BusOwner

log = logging.getLogger("citynerve.bus")


async def run_listen(owner: BusOwner, driver: ListenDriver[Any, Any]) -> None:
    """A listening bus: the driver reports as its devices speak; a watchdog marks the silent offline."""
    start = owner.clock.wall()
    for h in owner.health.values():
        h.last_seen = start
    owner._heard = dict.fromkeys(owner.health, owner.clock.monotonic())
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_listen_watchdog(owner), name=f"bus[{owner.bus.id}].watchdog")
        while True:
            if not await owner._open():
                await _sleep_while_down(owner, owner._channel_backoff)
                continue
            owner._channel_works()  # nothing to wait a reply for: the open's backoff starts again
            for device_id, err in driver.device_faults().items():
                if (device := owner.devices.get(device_id)) is not None:
                    owner._unusable(device, str(err))
            try:
                await _listen_while_adapter_there(owner, driver)
            except ChannelError as err:
                owner._channel_broken(err)
            except GatewayError as err:
                log.error("bus %s: listener stopped: %s", owner.bus.id, err)
                owner.channel_error = str(err)
            except Exception:
                log.exception("bus %s: listener crashed; restarting it", owner.bus.id)
                owner.channel_error = "listener crashed"
            await owner._close()
            owner._channel_backoff = max(owner._channel_backoff, owner.bus.backoff_initial_s / 4)
            # Not a plain sleep: a port lost with its node (the adapter pulled) reopens once it is back.
            await _sleep_while_down(owner, owner._channel_backoff)


async def _listen_while_adapter_there(owner: BusOwner, driver: ListenDriver[Any, Any]) -> None:
    """Listen; where the adapter has a device node, look for it every ADAPTER_CHECK_S meanwhile. A
    BLE adapter pulled while scanning raises nothing: the listener only stops hearing (the scan
    watchdog notices after watchdog_s, minutes, and never says the adapter is gone)."""
    listen = asyncio.create_task(driver.listen(ListenSink(owner)), name=f"bus[{owner.bus.id}].listen")
    try:
        while not listen.done():
            await asyncio.wait({listen}, timeout=ADAPTER_CHECK_S)
            if not listen.done() and owner.adapter.gone():
                raise ChannelError(owner.bus.id, f"adapter {owner.adapter.port} is gone")
        listen.result()
    finally:
        await stop_task(listen)


async def _sleep_while_down(owner: BusOwner, seconds: float) -> None:
    """The channel is down: wait `seconds` (the open's backoff), or less when its missing port is
    back (a fire panel's adapter plugged back in is opened at once, not minutes later) or its
    half-gone adapter is due another try (every ADAPTER_CHECK_S)."""
    end = owner.clock.monotonic() + seconds
    while (left := end - owner.clock.monotonic()) > 0:
        await asyncio.sleep(min(left, ADAPTER_CHECK_S) if owner.adapter.watching else left)
        if owner.adapter.due():
            return


async def _listen_watchdog(owner: BusOwner) -> None:
    """Devices not heard for `poll_interval_s * offline_after` go offline (monotonic clock: a step
    of the wall clock is no silence), with the same hysteresis as polled ones (`_gone_offline`)."""
    while True:
        await asyncio.sleep(1.0)
        mono = owner.progress = owner.clock.monotonic()
        for device in owner.devices.values():
            health = owner.health[device.id]
            expected = (device.poll_interval_s or 60.0) * owner.bus.offline_after
            silent = mono - owner._heard.get(device.id, mono)
            if health.online is not False and silent > expected:
                health.consecutive_failures = owner.bus.offline_after
                owner._gone_offline(device, f"not heard for {silent:.0f} s", owner.clock.wall())


class ListenSink:
    """Passes a listening driver's output on, noting who was heard."""

    def __init__(self, owner: BusOwner) -> None:
        self._owner = owner

    def submit(self, batch: SampleBatch) -> None:
        owner = self._owner
        device = owner.devices.get(batch.device_id)
        if device is None:
            owner.sink.submit(batch)
            return
        owner._heard[device.id] = owner.clock.monotonic()
        owner.counters.transactions += 1
        owner.health[device.id].transactions += 1
        batch = SampleBatch(batch.device_id, batch.ts, owner._plausible(device, batch.samples))
        try:
            owner.sink.submit(batch)
        except Exception as err:  # one device's batch never stops the listener for the others
            owner._listen_fault(device, f"pipeline raised {err!r}")
            return
        owner._success(device, batch.ts)  # heard, and handled: clears offline and fault

    def event(self, event: Event) -> None:
        self._owner.sink.event(event)
