"""A meter's use judged against its peers' use in the same slot: the households of one feeder (issue 18).

Weather is shared: on the nights of a heat spell most households of a feeder run their air
conditioning all night, far above each one's own past. An anomaly rule with `peers = "<prefix>"`
scores, for a device tagged `<prefix>:<group>`, its use in a slot minus the median use of the other
members of the group in that slot (its *excess over its peers*), against its own usual excess; a
device without such a tag is scored on its own use. `peers_quantile` takes another quantile of the
others' uses than the median (0.75: the use a quarter of the feeder exceeds). Slots close at each
member's next reading, so a slot is scored one slot later, when every member that still reports has
closed it. Fewer than `MIN_PEERS` others reporting: the slot is not judged (unknown is neither fine
nor alarm).
"""

from __future__ import annotations

import statistics

MIN_PEERS = 2
KEEP_SLOTS = 4


class PeerSlots:
    """The slot uses of one group's members, the last few slots only (constant memory per group)."""

    __slots__ = ("q", "slot_s", "uses")

    def __init__(self, q: float = 0.5, slot_s: float = 3600.0) -> None:
        self.q = q
        self.slot_s = slot_s
        self.uses: dict[int, dict[str, float]] = {}

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: the slots move with it, as the members' (their
        AnomalyCondition.shift); a backward step must not leave old slots where new ones come."""
        k = round(delta / self.slot_s)
        if k:
            self.uses = {s + k: row for s, row in self.uses.items()}

    def put(self, slot: int, member: str, use: float) -> None:
        self.uses.setdefault(slot, {})[member] = use
        for old in [s for s in self.uses if s <= slot - KEEP_SLOTS]:
            del self.uses[old]

    def excess(self, slot: int, member: str) -> float | None:
        """The member's use in `slot` minus the others' quantile `q`, or None when not known."""
        row = self.uses.get(slot, {})
        own = row.get(member)
        others = [u for m, u in row.items() if m != member]
        if own is None or len(others) < MIN_PEERS:
            return None
        return own - quantile(others, self.q)


def quantile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (0..1), linear between order statistics (q = 0.5: the median)."""
    if q == 0.5:
        return statistics.median(values)
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
