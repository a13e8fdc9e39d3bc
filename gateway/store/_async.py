"""`AsyncOutbox`: the outbox for asyncio code. SQLite runs on one dedicated thread, never on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.store._blocks import ReadingBlock, ReadingMark
from citynerve.gateway.store._config import MIB, StoreConfig
from citynerve.gateway.store._destinations import DEFAULT_DESTINATION, RecordFilter
from citynerve.gateway.store._errors import StoreError
from citynerve.gateway.store._outbox import Outbox, OutboxRow, Synchronous
from citynerve.gateway.store._schema import BLOCK_READINGS
from citynerve.gateway.store._stats import Lane, StoreStats

log = logging.getLogger(__name__)

T = TypeVar("T")
CommitCallback = Callable[[Lane, int], None]


class AsyncOutbox:
    """An `Outbox` owned by one worker thread; every method is a coroutine that runs there.

    Use as `async with AsyncOutbox(path) as ob:`. Satisfies `citynerve.gateway.api.StateStore` (get/put).
    Readers (the uplink) register `on_commit` to learn, on the event loop, the last seq committed
    to a lane, instead of polling the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * MIB,
        synchronous: Synchronous = "full",
        block_readings: int = BLOCK_READINGS,
    ) -> None:
        self.path = os.fspath(path)
        self._max_bytes = max_bytes
        self._block_readings = block_readings
        self._synchronous: Synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._outbox: Outbox | None = None
        self._callbacks: list[CommitCallback] = []
        self._event_seq_told = 0  # the last event-lane seq the callbacks heard of

    @classmethod
    def from_config(cls, config: StoreConfig, *, block_readings: int = BLOCK_READINGS) -> AsyncOutbox:
        """From the `[store]` config table (its path already resolved by the config loader).

        `block_readings`: readings per stored telemetry block; the uplink's readings per message,
        so that a drain sends whole blocks."""
        return cls(
            config.path,
            max_bytes=config.max_bytes,
            synchronous=config.synchronous,
            block_readings=block_readings,
        )

    async def open(self) -> None:
        """Open the file on the worker thread (migrating it if needed). Raises StoreError."""
        if self._outbox is not None:
            return
        # One thread for the connection's whole life: sqlite3 objects stay on the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        try:
            self._outbox = await self._run(
                functools.partial(
                    Outbox,
                    self.path,
                    max_bytes=self._max_bytes,
                    synchronous=self._synchronous,
                    block_readings=self._block_readings,
                ),
                opening=True,
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Close the file and stop the worker thread (idempotent)."""
        if self._executor is None:
            return
        outbox, self._outbox = self._outbox, None
        executor, self._executor = self._executor, None
        if outbox is not None:
            await asyncio.get_running_loop().run_in_executor(executor, outbox.close)
        executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncOutbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[[], T], *, opening: bool = False) -> T:
        if self._executor is None or (self._outbox is None and not opening):
            raise StoreError(self.path, "outbox is not open")
        # shield: a cancelled caller must not leave us unsure whether a commit happened; the
        # thread finishes the call either way and the result is simply not awaited.
        result = await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, fn))
        # The outbox's own notices (new epoch, dropped ranges) may come from any call: tell readers.
        ob = self._outbox
        if ob is not None and ob.last_event_seq > self._event_seq_told:
            self._event_seq_told = ob.last_event_seq
            self._notify(Lane.EVENT, ob.last_event_seq)
        return result

    def _ob(self) -> Outbox:
        if self._outbox is None:
            raise StoreError(self.path, "outbox is not open")
        return self._outbox

    def on_commit(self, callback: CommitCallback) -> None:
        """Call `callback(lane, last_seq)` on the event loop after each commit that added rows to lane."""
        self._callbacks.append(callback)

    def remove_on_commit(self, callback: CommitCallback) -> None:
        """Stop calling `callback` (a reader that stops: an uplink replaced on reload must not stay
        reachable from the outbox); a callback not registered is ignored."""
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    async def append(
        self,
        readings: Sequence[Reading],
        events: Sequence[Event],
        *,
        marks: Sequence[ReadingMark | None] | None = None,
    ) -> tuple[int, int]:
        """`Outbox.append` on the worker thread, then the on_commit callbacks (events lane first)."""
        ob = self._ob()
        call = functools.partial(ob.append, readings, events)
        if marks is not None:
            call = functools.partial(call, marks=marks)
        first, last = await self._run(call)  # tells the events
        if last >= first and readings:
            self._notify(Lane.TELEMETRY, first + len(readings) - 1)
        return first, last

    def _notify(self, lane: Lane, seq: int) -> None:
        for cb in list(self._callbacks):
            try:
                cb(lane, seq)
            except Exception:
                # A reader's bug must not fail the writer's commit (which is already durable).
                log.exception("outbox on_commit callback %r failed", cb)

    async def peek(self, lane: Lane, *, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        ob = self._ob()
        return await self._run(functools.partial(ob.peek, lane, after_seq=after_seq, limit=limit))

    async def peek_telemetry_blocks(
        self, *, after_seq: int = 0, max_readings: int = 2000
    ) -> list[ReadingBlock]:
        """`Outbox.peek_telemetry_blocks` on the worker thread (it decompresses there)."""
        ob = self._ob()
        return await self._run(
            functools.partial(ob.peek_telemetry_blocks, after_seq=after_seq, max_readings=max_readings)
        )

    async def set_destinations(
        self, wants: Mapping[str, Iterable[Lane]], keeps: Mapping[str, RecordFilter] | None = None
    ) -> None:
        """`Outbox.set_destinations` on the worker thread (before any uplink acks)."""
        ob = self._ob()
        lanes = {d: tuple(v) for d, v in wants.items()}
        await self._run(functools.partial(ob.set_destinations, lanes, dict(keeps or {})))

    def note_delivered(self, lane: Lane, upto_seq: int, *, destination: str = DEFAULT_DESTINATION) -> None:
        """`Outbox.note_delivered` (no I/O: a number the next size-cap trim reads)."""
        self._ob().note_delivered(lane, upto_seq, destination=destination)

    async def ack(
        self,
        lane: Lane,
        upto_seq: int,
        *,
        destination: str = DEFAULT_DESTINATION,
        state: tuple[str, str] | None = None,
    ) -> int:
        """`Outbox.ack` on the worker thread (with `state`, that value is stored in the same commit)."""
        ob = self._ob()
        return await self._run(
            functools.partial(ob.ack, lane, upto_seq, destination=destination, state=state)
        )

    async def destination_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        ob = self._ob()
        return await self._run(ob.destination_stats)

    async def ack_seqs(self, seqs: Iterable[int]) -> int:
        ob = self._ob()
        return await self._run(functools.partial(ob.ack_seqs, list(seqs)))

    async def drop_too_large(self, lane: Lane, seq: int) -> int:
        """`Outbox.drop_too_large` on the worker thread (readers are told of its notice)."""
        ob = self._ob()
        return await self._run(functools.partial(ob.drop_too_large, lane, seq))

    async def stats(self) -> StoreStats:
        ob = self._ob()
        return await self._run(ob.stats)

    async def get(self, key: str) -> str | None:
        """StateStore.get: a small durable value or None."""
        ob = self._ob()
        return await self._run(functools.partial(ob.get_state, key))

    async def put(self, key: str, value: str) -> None:
        """StateStore.put: set a small durable value; committed when this returns."""
        ob = self._ob()
        await self._run(functools.partial(ob.put_state, key, value))

    async def kept(self, kind: str) -> dict[str, str]:
        """Every entry of the kept set `kind` (key -> value)."""
        ob = self._ob()
        return await self._run(functools.partial(ob.get_kept, kind))

    async def keep(
        self,
        kind: str,
        put: Mapping[str, str],
        forget: Collection[str] = (),
        *,
        state: Mapping[str, str | None] | None = None,
    ) -> None:
        """`Outbox.keep` on the worker thread: entries of a kept set (and state values) in one commit."""
        ob = self._ob()
        await self._run(functools.partial(ob.keep, kind, dict(put), list(forget), state=dict(state or {})))

    @property
    def epoch(self) -> str:
        """The store epoch: every message the uplink sends carries it (citynerve.gateway.store._epoch)."""
        return self._ob().epoch

    @property
    def next_seq(self) -> int:
        """The seq the next appended row will get (as of the last finished call)."""
        return self._ob().next_seq

    def __repr__(self) -> str:
        state = "open" if self._outbox is not None else "closed"
        return f"<AsyncOutbox {self.path} {state}>"
