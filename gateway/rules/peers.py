"""A meter's use judged against its peers' use in the same slot: the households of one feeder (issue 18).

Weather is shared: on the nights of a heat spell most households of a feeder run their air
conditioning all night, far above each one's own past. An anomaly rule with `peers = "<prefix>"`
scores, for a device tagged `<prefix>:<group>`, its use in a slot minus the median use of the other
members of the group in that slot (its *excess over its peers*), against its own usual excess; a
device without such a tag is scored on its own use. Slots close at each member's next reading, so
a slot is scored one slot later, when every member that still reports has closed it. Fewer than
`MIN_PEERS` others reporting: the slot is not judged (unknown is neither fine nor alarm).
"""

from __future__ import annotations

import statistics

MIN_PEERS = 2
KEEP_SLOTS = 4


class PeerSlots:
    """The slot uses of one group's members, the last few slots only (constant memory per group)."""

    __slots__ = ("uses",)

    def __init__(self) -> None:
        self.uses: dict[int, dict[str, float]] = {}

    def put(self, slot: int, member: str, use: float) -> None:
        self.uses.setdefault(slot, {})[member] = use
        for old in [s for s in self.uses if s <= slot - KEEP_SLOTS]:
            del self.uses[old]

    def excess(self, slot: int, member: str) -> float | None:
        """The member's use in `slot` minus the others' median, or None when not known."""
        row = self.uses.get(slot, {})
        own = row.get(member)
        others = [u for m, u in row.items() if m != member]
        if own is None or len(others) < MIN_PEERS:
            return None
        return own - statistics.median(others)
