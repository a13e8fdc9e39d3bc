# One wake of the bed-foot node: look at the strip, debounce across wakes, advertise on a change
# (a fast burst) or when the heartbeat is due, then say how long to deep-sleep.
#
# The debounce runs across deep sleeps: the state that differs from the one sent must be seen on
# consecutive wakes for `debounce_s`, so turning over or sitting on the edge is not "out of bed".
# State in RTC memory (lost on power loss: the first look then decides at once).
# A strip reading the ADC's top (`strip_fault_v`: crushed flat, its wire shorted to the supply) is
# no person: "in bed" for ever would hide a fall at night. The node sends a sensor fault (0x26) in
# the occupancy's place and keeps its state until the strip reads again. (An open strip reads 0 V,
# as an empty bed does: the node cannot tell them apart; the gateway's routine rules see a bed
# never slept in.)

from manhole import bthome
from manhole.core import NodeCore


class BedNode(NodeCore):
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        NodeCore.__init__(self, hw, cfg, counter_path)
        state = hw.rtc.state()
        self.in_bed = state.get("in_bed")  # None: unknown (power-up)
        self.pending_s = state.get("pending_s", -1)  # seconds the other state has been seen; -1 none
        self.beat_s = state.get("beat_s", cfg["heartbeat_interval_s"])  # a power-up sends at once
        self.faulted = False  # the strip reads at the ADC's top (strip_fault_v)

    def look(self):
        """Update the debounced state from one look at the strip. True when it changed."""
        cfg = self.cfg
        v = self.hw.load_v()
        self.faulted = v >= cfg["strip_fault_v"]
        if self.faulted:
            self.pending_s = -1
            return self.sensor_fault("strip reads %.2f V, at or above strip_fault_v %.2f V: shorted, not a person"
                                     % (v, cfg["strip_fault_v"]))
        fault_ended = self.sensor_fault(None)
        if self.in_bed is None:
            self.in_bed = v > cfg["occupied_v"]
            self.pending_s = -1
            return True
        other = v < cfg["empty_v"] if self.in_bed else v > cfg["occupied_v"]
        if not other:
            self.pending_s = -1
            return fault_ended
        self.pending_s = 0 if self.pending_s < 0 else self.pending_s + cfg["sample_interval_s"]
        if self.pending_s >= cfg["debounce_s"]:
            self.in_bed = not self.in_bed
            self.pending_s = -1
            return True
        return fault_ended

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        changed = self.look()
        if changed or self.beat_s >= cfg["heartbeat_interval_s"]:
            volts = self.hw.battery_v()
            objs = [
                (bthome.BATTERY, self.battery_pct(volts)),
                (bthome.VOLTAGE, volts),
                (bthome.PROBLEM, True) if self.faulted else (bthome.OCCUPANCY, self.in_bed),
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
