"""Commands are idempotent by id: a command id runs once; a command arriving again with an id already
seen (the platform resent it, the broker delivered it twice) gets the first outcome, not a second run.

Outcomes are kept in the outbox, one row each (so a restart does not run a command twice), each
at least as long as its command can be accepted: until its own expiry plus the clock skew allowed
(`valid_until`, else `keep_s`), on the wall clock AND for as long on the monotonic clock, so that a
wall clock stepped forward (NTP after a boot without a real-time clock) cannot forget an outcome
while the broker may still deliver its command again. Across a reboot (the boot id tells) each kept
outcome is kept its whole span again. At most `max_entries` (the soonest to expire forgotten first:
the nonce check still refuses a replay of a forgotten one). A chunked answer is kept without its
parts: its repeat is refused (`repeat_answer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from citynerve.gateway.api import SYSTEM_CLOCK, Clock, KeptStore, boot_id
from citynerve.gateway.uplink.commands import same_boot
from citynerve.gateway.uplink.encoding import CommandOutcome, CommandResult, RejectReason

log = logging.getLogger(__name__)

OUTCOMES = "uplink.outcomes"  # kept set: one row per command id
OUTCOMES_KEY = "uplink.command_outcomes"  # state: every outcome in one value, before OUTCOMES kept them


def _to_json(r: CommandResult) -> dict[str, Any]:
    return {
        "command_id": r.command_id,
        "action": r.action,
        "outcome": r.outcome.value,
        "reason": r.reason.value if r.reason else None,
        "detail": r.detail,
        "result": dict(r.result) if r.result is not None else None,
    }


def _from_json(d: dict[str, Any]) -> CommandResult:
    return CommandResult(
        d["command_id"],
        d["action"],
        CommandOutcome(d["outcome"]),
        RejectReason(d["reason"]) if d["reason"] else None,
        d["detail"],
        d["result"],
    )


class _Kept:
    """One outcome and how long it is kept: wall time, monotonic time, and the span (for a reboot)."""

    __slots__ = ("mono_until", "result", "span", "wall_until")

    def __init__(self, wall_until: float, mono_until: float, span: float, result: dict[str, Any]) -> None:
        self.wall_until, self.mono_until, self.span, self.result = wall_until, mono_until, span, result

    def live(self, wall: float, mono: float) -> bool:
        return self.wall_until >= wall or self.mono_until >= mono

    def row(self, boot: str) -> str:
        return json.dumps([self.wall_until, self.mono_until, boot, self.span, self.result])


def repeat_answer(first: CommandResult) -> CommandResult:
    """What a repeat of the command that got `first` gets: `first` again, but a chunked answer's
    parts are not kept (they can be megabytes), so its repeat is refused rather than answered
    with a summary of chunks that never come."""
    if not first.parts:
        return first
    return CommandResult(
        first.command_id,
        first.action,
        CommandOutcome.REJECTED,
        RejectReason.REPEAT_CHUNKED,
        "repeat of a chunked command: its parts are not kept; send a new id",
    )


class CommandOutcomes:
    """First outcome per command id, persisted; concurrent copies of one id wait for the first.

    `keep_s`: how long an outcome is kept when its command gives no expiry (a malformed one).
    One row per outcome (kept set OUTCOMES: [wall keep-until, monotonic keep-until, boot id, span,
    result]); a command writes its own and deletes the expired or evicted ones in one commit."""

    def __init__(
        self, state: KeptStore, *, keep_s: float, max_entries: int = 2_000, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._state = state
        self._keep_s = keep_s
        self._max = max_entries
        self._clock = clock
        self._boot = boot_id()
        self._done: dict[str, _Kept] = {}
        self._gone: set[str] = set()  # ids whose rows the next stored outcome deletes
        self._running: dict[str, asyncio.Future[CommandResult]] = {}
        self._loaded = False
        self._load_lock = asyncio.Lock()  # a command arriving during the load waits for it
        self.repeats = 0

    async def _load(self) -> None:
        async with self._load_lock:
            if not self._loaded:
                await self._read()
                self._loaded = True

    async def _read(self) -> None:
        rows = await self._state.kept(OUTCOMES)
        mono = self._clock.monotonic()
        try:
            for cid, row in rows.items():
                wall_until, mono_until, boot, span, result = json.loads(row)
                until = float(mono_until) if same_boot(boot, self._boot) else mono + float(span)
                self._done[cid] = _Kept(float(wall_until), until, float(span), dict(result))
            if single := await self._state.get(OUTCOMES_KEY):
                self._read_single(single, mono)
            for kept in self._done.values():
                _from_json(kept.result)  # every entry must decode
            if single:
                moved = {k: v.row(self._boot) for k, v in self._done.items()}
                await self._state.keep(OUTCOMES, moved, state={OUTCOMES_KEY: None})
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("command outcomes unreadable; starting empty (the nonce check still holds)")
            self._done = {}
            await self._state.keep(OUTCOMES, {}, rows, state={OUTCOMES_KEY: None})

    def _read_single(self, raw: str, mono: float) -> None:
        """Every outcome in one value, as versions before the rows stored them (moved into rows)."""
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("v") == 2:
            same = same_boot(data.get("boot"), self._boot)
            for k, (wall_until, mono_until, span, result) in dict(data["done"]).items():
                until = float(mono_until) if same else mono + float(span)
                self._done[str(k)] = _Kept(float(wall_until), until, float(span), dict(result))
        else:  # version 1: {id: [wall keep-until, result]}
            for k, v in dict(data).items():
                self._done[str(k)] = _Kept(float(v[0]), mono + self._keep_s, self._keep_s, dict(v[1]))

    async def once(
        self,
        command_id: str,
        now: float,
        run: Callable[[], Awaitable[CommandResult]],
        *,
        valid_until: float | None = None,
    ) -> CommandResult:
        """The outcome of `command_id`: `run()` the first time, `repeat_answer` of it after. `now`
        is the wall time; `valid_until` the last wall time the command can be accepted (its expiry
        plus the skew allowed): its outcome is kept at least that long, on both clocks."""
        await self._load()
        mono = self._clock.monotonic()
        for cid in [k for k, v in self._done.items() if not v.live(now, mono)]:
            del self._done[cid]
            self._gone.add(cid)
        if command_id in self._done:
            self.repeats += 1
            return _from_json(self._done[command_id].result)
        running = self._running.get(command_id)
        if running is not None:
            self.repeats += 1
            return await asyncio.shield(running)
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._running[command_id] = fut
        try:
            result = await run()
            span = self._keep_s if valid_until is None else max(0.0, valid_until - now)
            kept = _Kept(now + span, mono + span, span, _to_json(repeat_answer(result)))
            self._done[command_id] = kept
            self._gone.discard(command_id)
            while len(self._done) > self._max:
                evicted = min(self._done, key=lambda k: self._done[k].mono_until)
                del self._done[evicted]
                self._gone.add(evicted)
            put = {command_id: kept.row(self._boot)} if command_id in self._done else {}
            gone = set(self._gone)  # (other ids may join it while this commits)
            await self._state.keep(OUTCOMES, put, gone)
            self._gone -= gone
            fut.set_result(repeat_answer(result))
            return result
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(err)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._running[command_id]
