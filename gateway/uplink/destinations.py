"""What one destination receives: its `[upstream.filter]` applied to the outbox's rows.

Rows a filter leaves out are still covered by the destination's position (so the outbox can
delete them once every destination is past them), but no message carries them: the next message's
`prev_seq` is the last seq a message of that lane carried, so the platform sees no gap for them.
The outbox's own notices (device "", kinds `outbox_dropped` and `outbox_new_epoch`) go to every
destination that takes events, whatever its device, kind and severity filter: `outbox_dropped`
with `count` set to the rows that destination never got (the notice's `destinations` attr), and
not at all when it got them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from citynerve.gateway.api import Event, Severity
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxRow, ReadingBlock
from citynerve.gateway.uplink.config import UpstreamConfig

_LANES = {"event": Lane.EVENT, "telemetry": Lane.TELEMETRY}
_DROPPED = "outbox_dropped"
_NOTICES = frozenset({_DROPPED, "outbox_new_epoch"})  # citynerve.gateway.store._epoch KIND_*


@dataclass(frozen=True, slots=True)
class DestinationFilter:
    lanes: frozenset[Lane]
    devices: frozenset[str] | None  # None: every device
    event_kinds: frozenset[str] | None
    min_severity: Severity

    @classmethod
    def of(cls, config: UpstreamConfig) -> DestinationFilter:
        f = config.filter
        return cls(
            lanes=frozenset(_LANES[name] for name in f.lanes),
            devices=frozenset(f.devices) or None,
            event_kinds=frozenset(f.event_kinds) or None,
            min_severity=Severity[f.min_severity.upper()],
        )

    @property
    def narrows(self) -> bool:
        """It wants only some rows of its lanes (devices, event kinds or a minimum severity)."""
        return self.devices is not None or self.event_kinds is not None or self.min_severity > Severity.INFO

    def wants_device(self, device_id: str) -> bool:
        """Its readings of `device_id` (for the outbox's drop accounting, `RecordFilter`)."""
        return self.devices is None or device_id in self.devices

    def wants_event(self, e: Event) -> bool:
        """Whether `e` goes to this destination (the outbox's own notices always do)."""
        if e.device_id == "" and e.kind in _NOTICES:
            return True
        if self.devices is not None and e.device_id not in self.devices and e.device_id != "":
            return False
        return self.wants_kind(e.kind, e.severity)

    def wants_kind(self, kind: str, severity: Severity) -> bool:
        """Whether events of `kind` and `severity` go to this destination (of a wanted device)."""
        return (self.event_kinds is None or kind in self.event_kinds) and severity >= self.min_severity

    def events(self, rows: Sequence[OutboxRow], destination: str) -> list[OutboxRow]:
        out = []
        for row in rows:
            e = row.record
            if not isinstance(e, Event):
                continue
            if e.kind in _NOTICES and e.device_id == "":
                mine = e.attrs.get("destinations") if e.kind == _DROPPED else None
                if isinstance(mine, dict):
                    n = mine.get(destination, 0)
                    if not n:
                        continue
                    attrs = {k: v for k, v in e.attrs.items() if k != "destinations"}
                    attrs["count"] = n
                    row = dataclasses.replace(row, record=dataclasses.replace(e, attrs=attrs))
                out.append(row)
                continue
            if self.wants_event(e):
                out.append(row)
        return out

    def blocks(self, blocks: list[ReadingBlock]) -> list[ReadingBlock]:
        """The readings of the wanted devices, as runs of consecutive seqs."""
        if self.devices is None:
            return blocks
        out = []
        for block in blocks:
            keep = [s[0] in self.devices for s in block.series]
            start = None
            for k, i in enumerate(block.sidx):
                if keep[i]:
                    if start is None:
                        start = k
                elif start is not None:
                    out.append(block.slice(start, k))
                    start = None
            if start is not None:
                out.append(block.slice(start, block.count))
        return out


async def register_destinations(outbox: AsyncOutbox, configs: Sequence[UpstreamConfig]) -> None:
    """Tell the outbox the enabled destinations of `configs` before any uplink runs: the lanes each
    wants (a row leaves once every destination wanting it acked it) and the filters that narrow
    them (their drops count only rows they want). None enabled: the first, for both lanes."""
    filters = {c.id: DestinationFilter.of(c) for c in configs if c.enabled}
    wants = {d: f.lanes for d, f in filters.items()} or {configs[0].id: frozenset(Lane)}
    await outbox.set_destinations(wants, keeps={d: f for d, f in filters.items() if f.narrows})
