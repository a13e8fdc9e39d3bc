# One wake of the bed-foot node: look at the strip, debounce across wakes, advertise on a change
# (a fast burst) or when the heartbeat is due, then say how long to deep-sleep.
#
# The debounce runs across deep sleeps: the state that differs from the one sent must be seen on
# consecutive wakes for `debounce_s`, so turning over or sitting on the edge is not "out of bed".
# State in RTC memory (lost on power loss: the first look then decides at once).

from manhole import bthome
from manhole.core import NodeCore


class BedNode(NodeCore):
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        NodeCore.__init__(self, hw, cfg, counter_path)
        state = hw.rtc.state()
        self.in_bed = state.get("in_bed")  # None: unknown (power-up)
        self.pending_s = state.get("pending_s", -1)  # seconds the other state has been seen; -1 none
        self.beat_s = state.get("beat_s", cfg["heartbeat_interval_s"])  # a power-up sends at once

    def look(self):
        """Update the debounced state from one look at the strip. True when it changed."""
        cfg = self.cfg
        v = self.hw.load_v()
        if self.in_bed is None:
            self.in_bed = v > cfg["occupied_v"]
            self.pending_s = -1
            return True
        other = v < cfg["empty_v"] if self.in_bed else v > cfg["occupied_v"]
        if not other:
            self.pending_s = -1
            return False
        self.pending_s = 0 if self.pending_s < 0 else self.pending_s + cfg["sample_interval_s"]
        if self.pending_s >= cfg["debounce_s"]:
            self.in_bed = not self.in_bed
            self.pending_s = -1
            return True
        return False

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        changed = self.look()
        if changed or self.beat_s >= cfg["heartbeat_interval_s"]:
            volts = self.hw.battery_v()
            objs = [
                (bthome.BATTERY, self.battery_pct(volts)),
                (bthome.VOLTAGE, volts),
                (bthome.OCCUPANCY, self.in_bed),
            ]
            self.send(self.advert(objs), changed)
            self.beat_s = 0
        self.beat_s += cfg["sample_interval_s"]
        state = self.hw.rtc.state()  # the counter wrote its slot meanwhile
        state["in_bed"] = self.in_bed
        state["pending_s"] = self.pending_s
        state["beat_s"] = self.beat_s
        self.hw.rtc.save_state(state)
        return cfg["sample_interval_s"] * 1000
