"""Where each destination stands in the outbox: one acknowledged position per destination and lane.

A row leaves the outbox once every destination that wants its lane has acknowledged it: each
destination's uplink acks its own position (`Outbox.ack(..., destination=)`), and the rows up to
the lowest position of the destinations that want the lane are deleted. A destination that does
not want a lane (an events-only one) holds nothing back there. Positions are kept in the `state`
table (`position_key`), in the ack's own commit.

Without `Outbox.set_destinations` there is one destination, `default`, wanting both lanes: the
outbox then behaves as a single queue (and its positions keep the keys they always had).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from citynerve.gateway.store._stats import Lane

DEFAULT_DESTINATION = "default"
POSITION_PREFIX = "uplink.ack_seq."  # cleared with every new store epoch (citynerve.gateway.store._epoch)
_LANE_NAMES = {Lane.EVENT: "event", Lane.TELEMETRY: "telemetry"}


def position_key(destination: str, lane: Lane) -> str:
    """The `state` key of a destination's acknowledged position in `lane`."""
    base = f"{POSITION_PREFIX}{_LANE_NAMES[Lane(lane)]}"
    return base if destination == DEFAULT_DESTINATION else f"{base}.{destination}"


@dataclass(slots=True)
class Destinations:
    """The destinations of one outbox, the lanes each wants and their positions (in memory; the
    outbox keeps them durable)."""

    wants: dict[str, frozenset[Lane]] = field(default_factory=dict)
    acked: dict[str, dict[Lane, int]] = field(default_factory=dict)
    delivered: dict[str, dict[Lane, int]] = field(default_factory=dict)  # end-to-end: held by the platform

    def set(self, wants: Mapping[str, Iterable[Lane]], positions: Mapping[tuple[str, Lane], int]) -> None:
        self.wants = {d: frozenset(Lane(x) for x in lanes) for d, lanes in wants.items()}
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
