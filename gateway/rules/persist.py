"""Keep the rule engine's state across restarts in the store's durable key/value state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from citynerve.gateway.api import DeviceConfig, Event, StateStore, SteadyWall, utc_now
from citynerve.gateway.rules.actions import ActionTarget
from citynerve.gateway.rules.alarm import Transition
from citynerve.gateway.rules.config import RulesConfig
from citynerve.gateway.rules.engine import RuleEngine, RuleInstance
from citynerve.gateway.rules.restored import max_snapshot_chars

log = logging.getLogger("citynerve.gateway.rules")

STATE_KEY = "rules.state"
PROMPT_SAVE_MIN_S = 30.0
"""Saves asked for by an action start or an interlock change: at most one per this many seconds
(each writes the whole snapshot: SD-card wear), the first at once."""


class RuleStateKeeper:
    """Restores the engine at start, snapshots it every `interval_s` and once more at stop.

    `store` is anything with async `get(key)` / `put(key, value)` of strings (the outbox's
    `AsyncOutbox`). JSON encoding runs in a worker thread: with a learned daily profile per
    household the snapshot of a big site is a few megabytes.
    """

    def __init__(self, engine: RuleEngine, store: StateStore, *, interval_s: float | None = None) -> None:
        self.engine = engine
        self.store = store
        self.interval_s = interval_s if interval_s is not None else engine.config.snapshot_interval_s

    async def restore(self) -> int:
        """Load the last snapshot, if any; returns how many rule instances were restored."""
        raw = await self.store.get(STATE_KEY)
        if not raw:
            return 0
        fresh = await asyncio.to_thread(json.dumps, self.engine.snapshot(), separators=(",", ":"))
        limit = max_snapshot_chars(self.engine, len(fresh))
        if len(raw) > limit:  # damage, or not ours: parsing it could take the box's memory
            log.warning(
                "rules snapshot of %d characters, more than this config's rules can make (%d): not "
                "loaded, starting fresh",
                len(raw),
                limit,
            )
            return 0
        try:
            data = await asyncio.to_thread(json.loads, raw)
        except ValueError as err:
            log.warning("rules snapshot unreadable (%s): starting fresh", err)
            return 0
        if not isinstance(data, dict):
            log.warning("rules snapshot is not an object: starting fresh")
            return 0
        return self.engine.restore(data)

    async def save(self) -> None:
        """Snapshot now (the dict is built on the loop, so it is consistent; encoding is threaded)."""
        snap = self.engine.snapshot()
        raw = await asyncio.to_thread(json.dumps, snap, separators=(",", ":"))
        await self.store.put(STATE_KEY, raw)

    async def run(self) -> None:
        """Snapshot periodically until cancelled; the final snapshot is taken on cancellation."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                await self.save()
        finally:
            await asyncio.shield(self.save())


class PersistentRuleEngine(RuleEngine):
    """A RuleEngine that keeps its state in a StateStore: snapshots from `tick` every
    `snapshot_interval_s` (as a background task, never blocking the tick) and at `save`."""

    def __init__(
        self,
        config: RulesConfig,
        devices: Sequence[DeviceConfig] | Mapping[str, DeviceConfig],
        *,
        state: StateStore,
        target: ActionTarget | None = None,
        clock: Callable[[], float] = utc_now,
        events: Callable[[Event], None] | None = None,
        steady: SteadyWall | None = None,
    ) -> None:
        super().__init__(config, devices, target=target, clock=clock, events=events, steady=steady)
        self.keeper = RuleStateKeeper(self, state)
        self._last_save = clock()
        self._saving: asyncio.Task[None] | None = None
        self._queued = False  # a save is scheduled and has not taken its snapshot yet
        self._hurry = asyncio.Event()  # set by `save`: a prompt save waiting its turn goes now
        self._prompt_at = -math.inf  # loop time of the last prompt save
        self.actions.changed = self._save_soon

    def tick(self, now: float) -> list[Event]:
        out = super().tick(now)
        if now - self._last_save >= self.keeper.interval_s:
            self._last_save = now
            self._schedule_save()
        return out

    def shift(self, delta: float) -> None:
        super().shift(delta)
        self._last_save += delta

    def _emit(self, inst: RuleInstance, tr: Transition, ts: float, out: list[Event]) -> bool:
        """As RuleEngine._emit; a raise (or a flapping notice) is saved promptly: a power cut before
        the periodic snapshot left the engine restored without it, and the restart told the platform
        "cleared: no longer active after a restart or reload" before raising it again (after its
        hold: minutes). The raises a flapping instance holds back ask for no save."""
        raised = super()._emit(inst, tr, ts, out)
        if raised:
            self._save_soon()
        return raised

    def set_away(self, device_id: str, away: bool) -> None:
        """As RuleEngine.set_away, saved at once: an operator's flag must survive a power cut."""
        super().set_away(device_id, away)
        self._schedule_save()

    def set_override(self, device_id: str, action_id: str, on: bool) -> None:
        """As RuleEngine.set_override, saved at once: an interlock must survive a power cut."""
        super().set_override(device_id, action_id, on)
        self._schedule_save()

    def serviced(self, device_id: str) -> list[str]:
        """As RuleEngine.serviced, saved at once: a restart must not bring the old count back."""
        done = super().serviced(device_id)
        if done:
            self._schedule_save()
        return done

    def _save_soon(self) -> None:
        """An action started or the interlocks changed: a power cut must not forget it (a brown-out
        loop would actuate a valve at every boot). Coalesced with any save not yet started."""
        self._schedule_save(prompt=True)

    def _schedule_save(self, *, prompt: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # outside a loop (a test or a replay): nothing to schedule on
        if self._queued:  # the save waiting to start takes this change too
            if not prompt:
                self._hurry.set()  # an operator's change is saved at once, not after the prompt wait
            return
        previous = self._saving
        self._queued = True

        async def save_after_previous() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            delay = self._prompt_at + PROMPT_SAVE_MIN_S - loop.time()
            if prompt and delay > 0:  # cut short by `save` (the stop's final snapshot)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), delay)
            self._hurry.clear()
            if prompt:
                self._prompt_at = loop.time()
            self._queued = False  # from here the snapshot is taken: later changes need a save of their own
            await self._save_logged()

        self._saving = loop.create_task(save_after_previous(), name="rules.snapshot")

    async def _save_logged(self) -> None:
        try:
            await self.keeper.save()
        except Exception:  # a full disk costs learned state, never detection
            log.exception("rules snapshot failed")

    async def save(self, store: Any = None) -> None:
        """Final snapshot (the runtime calls this at stop). `store` is accepted for the runtime's call."""
        if self._saving is not None and not self._saving.done():
            self._hurry.set()
            await self._saving
        await self.actions.wait_idle()
        await self.keeper.save()


async def build_off_loop(make: Callable[[], PersistentRuleEngine]) -> PersistentRuleEngine:
    """`make()` in a worker thread. Binding the rules to thousands of devices takes a while (10,000
    detectors with the smoke-fire pack: about half a second; before the binding was made linear, a
    reload of 5,000 held the event loop 16 s: no polling, a smoke alarm 16 s late). Safe: a new
    engine touches only the (immutable) config and its own new objects, and no event loop
    (asyncio.Event binds one at its first wait); it joins the loop's work only once returned."""
    return await asyncio.to_thread(make)


async def build_engine(
    config: RulesConfig,
    devices: Sequence[DeviceConfig] | Mapping[str, DeviceConfig],
    *,
    actions: ActionTarget | None = None,
    state: StateStore,
    events: Callable[[Event], None] | None = None,
    steady: SteadyWall | None = None,
) -> PersistentRuleEngine:
    """The runtime's entry point: build the engine, restore its last snapshot, return it.

    The engine is built in a worker thread (`build_off_loop`)."""

    def make() -> PersistentRuleEngine:
        return PersistentRuleEngine(
            config, devices, state=state, target=actions, events=events, steady=steady
        )

    engine = await build_off_loop(make)
    try:
        n = await engine.keeper.restore()
    except Exception:  # a snapshot the checks missed: it costs the learned state, never the start
        log.exception("rules snapshot cannot be restored: starting fresh")
        engine = await build_off_loop(make)
        n = 0
    log.info(
        "rules: %d rule instances on %d devices, %d restored", len(engine.instances), len(engine.devices), n
    )
    return engine
