"""Commands are idempotent by id: a command id runs once; a command arriving again with an id already
seen (the platform resent it, the broker delivered it twice) gets the first outcome, not a second run.

Outcomes are kept in the outbox's key/value state (so a restart does not run a command twice) for the
window a command can live (`max_lifetime_s + max_clock_skew_s`), at most `max_entries` of them
(the oldest forgotten first: the nonce check still refuses a replay of a forgotten one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from citynerve.gateway.uplink.commands import KeyValueState
from citynerve.gateway.uplink.encoding import CommandOutcome, CommandResult, RejectReason

log = logging.getLogger(__name__)

OUTCOMES_KEY = "uplink.command_outcomes"


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


class CommandOutcomes:
    """First outcome per command id, persisted; concurrent copies of one id wait for the first."""

    def __init__(self, state: KeyValueState, *, keep_s: float, max_entries: int = 2_000) -> None:
        self._state = state
        self._keep_s = keep_s
        self._max = max_entries
        self._done: dict[str, tuple[float, dict[str, Any]]] = {}  # id -> (keep until, result)
        self._running: dict[str, asyncio.Future[CommandResult]] = {}
        self._loaded = False
        self.repeats = 0

    async def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        raw = await self._state.get(OUTCOMES_KEY)
        if not raw:
            return
        try:
            data = json.loads(raw) if isinstance(raw, str | bytes) else raw
            self._done = {str(k): (float(v[0]), dict(v[1])) for k, v in dict(data).items()}
            for _, d in self._done.values():
                _from_json(d)  # every entry must decode
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("command outcomes unreadable; starting empty (the nonce check still holds)")
            self._done = {}

    async def once(
        self, command_id: str, now: float, run: Callable[[], Awaitable[CommandResult]]
    ) -> CommandResult:
        """The outcome of `command_id`: `run()` the first time, the stored outcome after."""
        await self._load()
        self._done = {k: v for k, v in self._done.items() if v[0] >= now}
        if command_id in self._done:
            self.repeats += 1
            return _from_json(self._done[command_id][1])
        running = self._running.get(command_id)
        if running is not None:
            self.repeats += 1
            return await asyncio.shield(running)
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._running[command_id] = fut
        try:
            result = await run()
            self._done[command_id] = (now + self._keep_s, _to_json(result))
            while len(self._done) > self._max:
                del self._done[min(self._done, key=lambda k: self._done[k][0])]
            await self._state.put(OUTCOMES_KEY, json.dumps(self._done, separators=(",", ":")))
            fut.set_result(result)
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
