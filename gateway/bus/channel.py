"""How a bus owner loses and regains its channel (a serial port, a TCP connection). Split from
owner.py; `BusOwner` inherits it.

A connection proves itself by a reply, not by its connect. A peer that accepts connections and
drops them (a converter whose connection slots are taken) or resets the connection when asked for a
dead unit (several cheap gateways) made the owner reconnect at once after every loss, reset its open
backoff at the connect, and probe every offline device within a second: a reconnect, an offline
probe and an ERROR + WARNING about every second, for ever, the devices' own backoff ignored."""

from __future__ import annotations

import asyncio
import heapq
import logging
import random

from citynerve.gateway.api import BusConfig, ChannelError
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.bus.adapter import AdapterWatch
from citynerve.gateway.bus.health import BusCounters, DeviceHealth
from citynerve.gateway.bus.jobs import _Entry

log = logging.getLogger("citynerve.bus")


class ChannelLoss:
    """The channel's losses, reopens and first replies of a bus owner."""

    bus: BusConfig
    counters: BusCounters
    health: dict[str, DeviceHealth]
    adapter: AdapterWatch
    channel_open: bool
    channel_error: str | None
    _rng: random.Random
    _offline: list[_Entry]
    _open_backoff: Backoff
    _channel_backoff: float
    _channel_retry_at: float

    def __init__(self) -> None:
        self._replied = False  # a reply came on the channel since it was (re)opened
        self._reopened = False  # opened again after a loss: probe the offline devices at its first reply
        self._breakers: set[str] = set()  # offline devices whose probe lost the channel: own backoff
        self._loss_logged = ("", -float("inf"))  # reason and loop time of the last "channel lost" ERROR
        self._loss_unanswered = False  # a loss was logged: log "open again" at the next reply

    def _channel_opened(self) -> None:
        """The channel opened. After a loss, the adapter or converter kept the offline devices from
        answering, not the devices: they are probed now (the first reply resets the open's backoff,
        `_channel_answers`)."""
        if self.channel_error is not None:
            self._reopened = True
            self._probe_offline_now(asyncio.get_running_loop().time())
        self._replied = False

    def _probe_offline_now(self, now: float) -> None:
        """The channel is open again: probe the offline devices now rather than after their grown
        backoff (the adapter, not the meters, kept them from answering), staggered over at most a
        second. Not those whose own probe lost the channel (a gateway that resets the connection
        when asked for a dead unit): they keep their backoff, or they lost it again every reopen."""
        for i, entry in enumerate(self._offline):
            device_id = entry.device_id
            if entry.index == 0 and self.health[device_id].online is False and entry.due > now:
                if device_id in self._breakers:  # asking it lost the channel: its own backoff
                    continue
                due = now + self._rng.uniform(0, min(1.0, entry.request.interval_s))
                self._offline[i] = _Entry(due, entry.order, entry.device_id, 0, entry.request)
        heapq.heapify(self._offline)

    def _channel_broken(self, err: ChannelError, device_id: str | None = None) -> None:
        """The channel was lost (in a transaction of `device_id`, or a job's). A channel that had
        answered is reopened at once (a converter restarted); one lost again before any reply came
        on it waits the open's doubling backoff (a peer that accepts and drops every connection).
        Logged as an ERROR when news: another reason, or the same after backoff_max_s; not when an
        offline device's probe lost it (that device is the news, and keeps its own backoff)."""
        now = asyncio.get_running_loop().time()
        self.counters.channel_errors += 1
        probing = device_id is not None and self.health[device_id].online is False
        if probing and device_id is not None:
            self._breakers.add(device_id)
        reason, logged_at = self._loss_logged
        if not probing and (err.reason != reason or now - logged_at >= self.bus.backoff_max_s):
            log.error("bus %s: channel lost: %s", self.bus.id, err.reason)
            self._loss_logged = (err.reason, now)
            self._loss_unanswered = True
        else:
            log.debug("bus %s: channel lost (%s) asking %s", self.bus.id, err.reason, device_id or "a job")
        self.channel_error = err.reason
        self.channel_open = False
        self.adapter.failed()  # the node gone with it: the status says so now, not at the reopen
        if self._replied:
            self._channel_backoff = self.bus.backoff_initial_s / 4
            self._channel_retry_at = 0.0  # reopen at once, then back off
        else:
            self._channel_backoff = self._open_backoff.next_delay()
            self._channel_retry_at = now + self._channel_backoff
        self._replied = False

    def _channel_answers(self, device_id: str) -> None:
        """A reply came on the channel (data, an exception, garbled bytes): it works. The first
        since it was opened resets the open's backoff and, after a loss, says so (at most once per
        logged loss) and probes the offline devices now."""
        self._breakers.discard(device_id)
        if not self._replied:
            self._channel_works()

    def _channel_works(self) -> None:
        """The channel works: a reply came on it, or a listening bus (which asks nothing) opened it."""
        self._replied = True
        self._open_backoff.reset()
        if self._loss_unanswered:
            self._loss_unanswered = False
            log.warning("bus %s: channel open again", self.bus.id)
        if self._reopened:
            self._reopened = False
            self._probe_offline_now(asyncio.get_running_loop().time())
