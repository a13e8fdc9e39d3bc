"""How a bus is wired into the running gateway, the same at start, at `reload` and after a crash.

`BusWiring.owner(bus_id)` is the one place that builds a bus owner: its driver from the config's
driver registry, its devices, and its sink (the pipeline, plus device events to the rule engine for
"node offline" rules), and which of its devices start offline (their offline alarm is still active
in the registry). `BusSupervisor` runs one bus's owner and, when the owner task dies of an
unexpected exception, raises a `bus_fault` event and starts a fresh owner from the same wiring after
a backoff; the rest of the gateway goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import (
    SYSTEM_CLOCK,
    Clock,
    Driver,
    Event,
    EventState,
    SampleBatch,
    Severity,
    StateStore,
    stop_task,
)
from citynerve.gateway.bus import FAULT_KIND, FAULT_RULE, OFFLINE_KIND, BusOwner
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.pipeline import Pipeline

log = logging.getLogger("citynerve.gateway")

BUS_FAULT_KIND = "bus_fault"
BUS_FAULT_RULE = "bus.supervisor"
STABLE_S = 60.0  # an owner that ran this long before crashing starts again from the initial backoff


class DeviceEventRules(Protocol):
    """What the rule engine offers bus events (device_offline / device_online for offline rules)."""

    def on_event(self, event: Event) -> Sequence[Event]: ...


class RuledBusSink:
    """What every bus owner feeds: the pipeline, and device events to the rules as well."""

    def __init__(self, pipeline: Pipeline, rules: DeviceEventRules | None) -> None:
        self.pipeline = pipeline
        self.rules = rules

    def submit(self, batch: SampleBatch) -> None:
        self.pipeline.submit(batch)

    def mark_offline(self, device_id: str, ts: float) -> None:
        self.pipeline.mark_offline(device_id, ts)

    def event(self, event: Event) -> None:
        self.pipeline.event(event)
        if self.rules is None:
            return
        try:
            derived = self.rules.on_event(event)
        except Exception:  # a rule bug must not stop the bus that reported the event
            log.exception("rules failed on event %s", event.kind)
            return
        for e in derived:
            self.pipeline.event(e)


@dataclass(frozen=True, slots=True)
class BusWiring:
    """Everything a bus owner is connected to. `config` is the current config (a reload swaps it)."""

    config: GatewayConfig
    sink: RuledBusSink
    state: StateStore
    alarms: ActiveAlarms
    clock: Clock = SYSTEM_CLOCK

    def driver(self, bus_id: str) -> Driver[Any, Any]:
        bus = self.config.bus(bus_id)
        spec = self.config.drivers[bus.protocol]
        return spec.factory(bus, self.config.devices_on(bus_id), state=self.state)

    def owner(self, bus_id: str) -> BusOwner:
        """A new owner for `bus_id`, wired like every other."""
        return BusOwner(
            self.config.bus(bus_id),
            self.config.devices_on(bus_id),
            self.driver(bus_id),
            self.sink,
            offline=self.alarms.devices_with(OFFLINE_KIND),
            faulted=self.alarms.devices_with(FAULT_KIND, FAULT_RULE),
            clock=self.clock,
            tz=ZoneInfo(self.config.gateway.tz),
        )


class BusSupervisor:
    """Runs one bus's owner; restarts it (fresh, same wiring) with backoff when its task crashes."""

    def __init__(
        self,
        bus_id: str,
        wiring: Callable[[], BusWiring],
        events: Callable[[Event], None],
        *,
        backoff_initial_s: float | None = None,
        backoff_max_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.bus_id = bus_id
        self._wiring = wiring
        self._events = events
        bus = wiring().config.bus(bus_id)
        self.backoff_initial_s = backoff_initial_s if backoff_initial_s is not None else bus.backoff_initial_s
        self.backoff_max_s = backoff_max_s if backoff_max_s is not None else bus.backoff_max_s
        self._rng = rng or random.Random()
        self.owner = wiring().owner(bus_id)
        self.crashes = 0
        # Still active from the last run: cleared once this run's owner has its channel open.
        restored = bus_id in wiring().alarms.devices_with(BUS_FAULT_KIND, BUS_FAULT_RULE)
        self.faulted: str | None = "bus fault from the last run" if restored else None
        self._backoff = 0.0

    async def run(self) -> None:
        """Until cancelled: run the owner; on a crash, raise bus_fault, wait, start a fresh one."""
        while True:
            started = time.monotonic()
            task = asyncio.create_task(self.owner.run(), name=f"bus[{self.bus_id}].run")
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=1.0)
                    if self.faulted is not None and self.owner.channel_open and not task.done():
                        self._clear()
                task.result()
                return  # an owner only returns when it was told to stop
            except asyncio.CancelledError:
                await stop_task(task)  # cancels again if a cancel was swallowed inside the owner
                raise
            except Exception as err:
                self._crashed(err, time.monotonic() - started)
            await asyncio.sleep(self._backoff * self._rng.uniform(0.8, 1.2))
            self.owner = self._wiring().owner(self.bus_id)
            log.warning("bus %s: owner started again after a crash", self.bus_id)

    def _crashed(self, err: Exception, ran_s: float) -> None:
        self.crashes += 1
        reason = f"bus owner crashed: {err!r}"
        log.error("bus %s: %s; restarting it", self.bus_id, reason, exc_info=err)
        if ran_s >= STABLE_S:
            self._backoff = 0.0
        self._backoff = min(self.backoff_max_s, max(self.backoff_initial_s, self._backoff * 2))
        if self.faulted is None:
            self._events(self._event(EventState.RAISED, reason))
        self.faulted = reason

    def _clear(self) -> None:
        log.warning("bus %s: running again after its crash", self.bus_id)
        self.faulted = None
        self._events(self._event(EventState.CLEARED, "bus owner running again"))

    def _event(self, state: EventState, reason: str) -> Event:
        return Event(
            device_id=self.bus_id,
            kind=BUS_FAULT_KIND,
            state=state,
            severity=Severity.MAJOR,
            ts=time.time(),
            rule=BUS_FAULT_RULE,
            message=reason,
            attrs={"bus": self.bus_id},
        )

    def snapshot(self) -> dict[str, Any]:
        snap = self.owner.snapshot()
        snap["crashes"] = self.crashes
        snap["faulted"] = self.faulted
        return snap
