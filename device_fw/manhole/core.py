# What every node of the family does the same way on each wake: its message counter, the battery
# percentage, one BTHome v2 reading under the next counter, and sending it - a fast burst on a change
# or an active alarm, else the heartbeat's few adverts. Nodes with an accelerometer (manhole cover,
# hydrant) also settle a held tilt alarm before they decide. Each build's node.py adds its sensors.

from manhole import bthome
from manhole.alarm import HoldAlarm
from manhole.counter import Counter, CounterStore
from manhole.errlog import log_message
from manhole.hal import CounterRtc
from manhole.tilt import tilt_deg

ALWAYS_ALARM_DEG = 90.0  # beyond 90 deg the thing is over (a cover open, a hydrant down), whatever the threshold
FAULT_SAMPLES = 3  # readings without gravity, sample_interval_ms apart, before the sensor is faulted


class NodeCore:
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        self.hw = hw
        self.cfg = cfg
        self.mac = hw.mac()
        self.counter = Counter(CounterStore(CounterRtc(hw.rtc), counter_path), cfg["counter_block"])
        self.adverts = []  # (adv_data, interval_ms, duration_ms) of this wake, for tests and logs

    def battery_pct(self, volts):
        lo, hi = self.cfg["battery_empty_v"], self.cfg["battery_full_v"]
        pct = (volts - lo) / (hi - lo) * 100.0
        return 0 if pct < 0 else 100 if pct > 100 else int(pct + 0.5)

    def sensor_fault(self, message):
        """Note whether a sensor reads (`message` None) or not (`message` says what it read).

        The node then sends BTHome 0x26 "problem" in that reading's place (never a made-up value
        the gateway would take for a healthy one). The fault is written to error.log when it
        starts (kept in RTC memory: a node faulted for months writes the flash once per power-on,
        not each wake). Returns True when the fault started or ended: news, sent as a burst.
        """
        state = self.hw.rtc.state()
        was = bool(state.get("fault", False))
        now = message is not None
        if now and not was:
            log_message("sensor fault: " + message)
        if now != was:
            state["fault"] = now
            self.hw.rtc.save_state(state)
        return now != was

    def advert(self, objs):
        """One reading: every advert carries a new counter, so a receiver never sees a counter
        twice with different data, and replays of old adverts are refused by the gateway."""
        sdata = bthome.service_data(objs, self.cfg["key_bytes"], self.mac, self.counter.next())
        return bthome.adv_payload(sdata, self.cfg["name"] or None)

    def broadcast(self, adv, interval_ms, duration_ms):
        self.adverts.append((adv, interval_ms, duration_ms))
        self.hw.advertise(adv, interval_ms)
        self.hw.sleep_ms(duration_ms)
        self.hw.advertise(None, 0)

    def send(self, adv, urgent):
        """A fast burst when `urgent` (a change, an active alarm), else the heartbeat's adverts."""
        cfg = self.cfg
        if urgent:
            self.broadcast(adv, cfg["alarm_advert_interval_ms"], cfg["alarm_burst_ms"])
        else:
            iv = cfg["heartbeat_advert_interval_ms"]
            self.broadcast(adv, iv, cfg["heartbeat_adverts"] * iv)


class TiltNode(NodeCore):
    def __init__(self, hw, cfg, tilted, counter_path="counter.dat"):
        NodeCore.__init__(self, hw, cfg, counter_path)
        threshold = min(cfg["tilt_threshold_deg"], ALWAYS_ALARM_DEG)
        self.tilt = HoldAlarm(threshold, min(cfg["tilt_clear_deg"], threshold), cfg["tilt_hold_ms"], tilted)

    def read_tilt(self):
        return tilt_deg(self.hw.accel_g(), self.cfg["reference_g"])

    def settle_tilt(self):
        """Sample tilt until the tilt alarm is decided; returns the last tilt (None: no reading)."""
        start = self.hw.ticks_ms()
        angle = self.read_tilt()
        changed = self.tilt.update(angle, start)
        # Bounded: a sensor that stops giving angles (None) must not keep the node awake forever.
        limit = 3 * self.cfg["tilt_hold_ms"] + self.cfg["sample_interval_ms"]
        while self.tilt.pending() and self.hw.ticks_diff(self.hw.ticks_ms(), start) < limit:
            self.hw.sleep_ms(self.cfg["sample_interval_ms"])
            angle = self.read_tilt()
            changed = self.tilt.update(angle, self.hw.ticks_ms()) or changed
        tries = 1
        while angle is None and tries < FAULT_SAMPLES:  # a knock or free fall lasts less than this
            self.hw.sleep_ms(self.cfg["sample_interval_ms"])
            angle = self.read_tilt()
            tries += 1
        return angle, changed

    def tilt_fault(self, angle):
        """`sensor_fault` for the accelerometer: no angle (it reads no gravity: a dead sensor)."""
        if angle is not None:
            return self.sensor_fault(None)
        g = self.hw.accel_g()
        return self.sensor_fault("accelerometer reads %.3f %.3f %.3f g, no gravity: tilt not measured" % tuple(g))

    def tilt_objects(self, angle):
        """The tilt (0x3F), or the sensor fault (0x26) when there is none: never a made-up 0 deg."""
        return [(bthome.ROTATION, angle)] if angle is not None else [(bthome.PROBLEM, True)]
