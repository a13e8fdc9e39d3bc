"""Where each destination stands in the outbox: one acknowledged position per destination and lane.

A row leaves the outbox once every destination that wants its lane has acknowledged it: each
destination's uplink acks its own position (`Outbox.ack(..., destination=)`), and the rows up to
the lowest position of the destinations that want the lane are deleted. A destination that does
not want a lane (an events-only one) holds nothing back there. Positions are kept in the `state`
table (`position_key`), in the ack's own commit.

Without `Outbox.set_destinations` there is one destination, `default`, wanting both lanes: the
outbox then behaves as a single queue (and its positions keep the keys they always had).

A destination left out of a lane (removed from the config, disabled, its filter without the lane)
holds nothing back there; its position stays. When it wants the lane again, the rows after its
position that left meanwhile were never sent to it: `absences` counts them (the rows after it when
it was left out, plus the rows the lane stored since, less the rows after it now) for an
`outbox_dropped` notice to it (`destination_absent`). So the outbox remembers every destination it
was given (`KNOWN_KEY`, not cleared with an epoch) and where each one left out stood (`ABSENT_PREFIX`,
cleared with an epoch as the positions are).

A destination whose filter narrows its lanes (some devices, event kinds, a minimum severity) may
give the outbox that filter (`RecordFilter`): rows the size cap drops are then counted as its loss
(its `dropped` counter, the `destinations` attr of the `outbox_dropped` notice) only when it
wanted them. The drop decodes the dropped rows for that; nothing else does (a backlog counts every
row of its lanes after its position).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from citynerve.gateway.api import Event
from citynerve.gateway.store._blocks import BlockError, decode_block
from citynerve.gateway.store._codec import decode_event
from citynerve.gateway.store._file import PUT_STATE
from citynerve.gateway.store._stats import LANE_STORED_KEY, Lane

DEFAULT_DESTINATION = "default"
POSITION_PREFIX = "uplink.ack_seq."  # cleared with every new store epoch (citynerve.gateway.store._epoch)
KNOWN_KEY = "outbox.destinations"  # {destination: [lanes]}: every destination the outbox was given
ABSENT_PREFIX = "outbox.absent."  # + lane.destination: where one left out of the lane stood
_LANE_NAMES = {Lane.EVENT: "event", Lane.TELEMETRY: "telemetry"}


def position_key(destination: str, lane: Lane) -> str:
    """The `state` key of a destination's acknowledged position in `lane`."""
    base = f"{POSITION_PREFIX}{_LANE_NAMES[Lane(lane)]}"
    return base if destination == DEFAULT_DESTINATION else f"{base}.{destination}"


class RecordFilter(Protocol):
    """What a destination wants of its lanes (`citynerve.gateway.uplink.destinations.DestinationFilter`)."""

    def wants_device(self, device_id: str) -> bool:
        """Its readings of this device."""
        ...

    def wants_event(self, event: Event) -> bool:
        """This event (the outbox's own notices always)."""
        ...


def wanted_after(
    conn: sqlite3.Connection, lane: Lane, after: int, where: str, args: tuple[object, ...], keep: RecordFilter
) -> int:
    """Records of `lane` after seq `after` among the rows matching `where` that `keep` wants (rows
    that cannot be decoded count as wanted: nobody can tell)."""
    where = f"{where} AND" if where else " WHERE"
    n = 0
    if lane is Lane.EVENT:
        for ts, body in conn.execute(f"SELECT ts, body FROM events{where} seq > ?", (*args, after)):
            try:
                n += keep.wants_event(decode_event(ts, body))
            except (ValueError, TypeError, KeyError):
                n += 1
        return n
    sql = f"SELECT first_seq, last_seq, codec, body, raw_len FROM reading_blocks{where} last_seq > ?"
    for first, last, codec, body, raw_len in conn.execute(sql, (*args, after)):
        try:
            block = decode_block(first, last, codec, body, raw_len).after(after)
        except BlockError:
            n += last - max(first, after + 1) + 1
            continue
        wanted = [keep.wants_device(s[0]) for s in block.series]
        n += sum(map(wanted.__getitem__, block.sidx))
    return n


@dataclass(slots=True)
class Destinations:
    """The destinations of one outbox, the lanes each wants and their positions (in memory; the
    outbox keeps them durable)."""

    wants: dict[str, frozenset[Lane]] = field(default_factory=dict)
    acked: dict[str, dict[Lane, int]] = field(default_factory=dict)
    delivered: dict[str, dict[Lane, int]] = field(default_factory=dict)  # end-to-end: held by the platform
    keeps: dict[str, RecordFilter] = field(default_factory=dict)  # narrowing filters only

    def set(
        self,
        wants: Mapping[str, Iterable[Lane]],
        positions: Mapping[tuple[str, Lane], int],
        keeps: Mapping[str, RecordFilter] | None = None,
    ) -> None:
        self.wants = {d: frozenset(Lane(x) for x in lanes) for d, lanes in wants.items()}
        self.keeps = {d: k for d, k in (keeps or {}).items() if d in self.wants}
        self.acked = {d: {lane: positions.get((d, lane), 0) for lane in Lane} for d in self.wants}
        self.delivered = {d: dict.fromkeys(Lane, 0) for d in self.wants}

    def wanting(self, lane: Lane) -> list[str]:
        return [d for d, lanes in self.wants.items() if lane in lanes]

    def floor(self, lane: Lane) -> int | None:
        """Rows of `lane` up to here are acknowledged by every destination that wants the lane;
        None when no destination wants it (its rows are kept by nobody)."""
        wanting = self.wanting(lane)
        return min(self.acked[d][lane] for d in wanting) if wanting else None

    def delivered_floor(self, lane: Lane) -> int:
        """Rows up to here are held by the platform of every destination that wants them (acked
        or, end-to-end, acknowledged by the platform before the uplink's delete)."""
        wanting = self.wanting(lane)
        if not wanting:
            return 0
        return min(max(self.acked[d][lane], self.delivered[d][lane]) for d in wanting)


@dataclass(frozen=True, slots=True)
class Absence:
    """A destination that wants `lane` again: `lost` rows of it after its `position` left the
    outbox while it was left out of the lane."""

    destination: str
    lane: Lane
    position: int
    lost: int


def absences(
    conn: sqlite3.Connection, wants: Mapping[str, Iterable[Lane]], rows_after: Callable[[Lane, int], int]
) -> list[Absence]:
    """Inside a transaction, when the destinations are set (`wants`): record where each known
    destination left out of a lane now stands (its position, the lane's rows after it, the rows the
    lane stored so far), and return those wanting a lane again that lost rows of it meanwhile.
    `rows_after(lane, seq)`: the lane's rows after seq in the outbox."""

    def get(key: str) -> str | None:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    known: dict[str, set[Lane]] = {}
    with contextlib.suppress(ValueError, TypeError, AttributeError):  # damaged: known from now on
        known = {str(d): {Lane(x) for x in lanes} for d, lanes in json.loads(get(KNOWN_KEY) or "{}").items()}
    for destination, lanes in wants.items():
        known.setdefault(destination, set()).update(Lane(x) for x in lanes)
    out = []
    for destination, lanes in known.items():
        for lane in sorted(lanes):
            key = f"{ABSENT_PREFIX}{_LANE_NAMES[lane]}.{destination}"
            left_out = get(key)
            row = conn.execute(
                "SELECT value FROM counters WHERE name = ?", (LANE_STORED_KEY[lane],)
            ).fetchone()
            stored = 0 if row is None else int(row[0])
            if lane not in wants.get(destination, ()):
                if left_out is None:  # left out from now on
                    raw = get(position_key(destination, lane))
                    at = int(raw) if raw and raw.isdigit() else 0
                    mark = {"position": at, "after": rows_after(lane, at), "stored": stored}
                    conn.execute(PUT_STATE, (key, json.dumps(mark)))
                continue
            if left_out is None:
                continue
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
            try:
                was = json.loads(left_out)
                at, lost = int(was["position"]), int(was["after"]) + stored - int(was["stored"])
            except (ValueError, TypeError, KeyError):
                continue  # damaged: nothing known of its loss
            lost -= rows_after(lane, at)
            if lost > 0:
                out.append(Absence(destination, lane, at, lost))
    conn.execute(
        PUT_STATE, (KNOWN_KEY, json.dumps({d: sorted(map(int, lanes)) for d, lanes in sorted(known.items())}))
    )
    return out
