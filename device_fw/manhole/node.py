# One wake of the manhole node: read, decide, advertise, then say how long to deep-sleep.
#
# Normal: one heartbeat (a few adverts of one reading), then deep sleep for heartbeat_interval_s.
# Tilt beyond the threshold: stay awake sampling until it has held tilt_hold_ms (or not), so a
# passing vehicle does not raise an alarm; high water and tamper raise at once. While any alarm is
# active, or when one changes, advertise a fast burst and wake again after alarm_interval_s.
# Every advert is a new reading with a new counter: a receiver never sees a counter twice with
# different data, and replays of old adverts are refused by the gateway.

from manhole import bthome
from manhole.alarm import HoldAlarm
from manhole.counter import Counter, CounterStore
from manhole.hal import CounterRtc
from manhole.tilt import tilt_deg

ALWAYS_ALARM_DEG = 90.0  # a cover beyond 90 deg is open, whatever the threshold


class Node:
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        self.hw = hw
        self.cfg = cfg
        self.mac = hw.mac()
        self.counter = Counter(CounterStore(CounterRtc(hw.rtc), counter_path), cfg["counter_block"])
        state = hw.rtc.state()
        alarms = state.get("alarms", {})  # RTC state is checksummed: empty after power loss
        threshold = min(cfg["tilt_threshold_deg"], ALWAYS_ALARM_DEG)
        self.tilt = HoldAlarm(threshold, min(cfg["tilt_clear_deg"], threshold), cfg["tilt_hold_ms"],
                              alarms.get("tilt", False))
        self.water = HoldAlarm(cfg["water_high_mm"], cfg["water_clear_mm"], 0, alarms.get("water", False))
        self.adverts = []  # (adv_data, interval_ms, duration_ms) of this wake, for tests and logs

    def battery_pct(self, volts):
        lo, hi = self.cfg["battery_empty_v"], self.cfg["battery_full_v"]
        pct = (volts - lo) / (hi - lo) * 100.0
        return 0 if pct < 0 else 100 if pct > 100 else int(pct + 0.5)

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
        return angle, changed

    def objects(self, angle, water_mm, volts, tamper, gas):
        objs = [
            (bthome.BATTERY, self.battery_pct(volts)),
            (bthome.OPENING, self.tilt.active),
            (bthome.MOISTURE, self.water.active),
            (bthome.TAMPER, tamper),
            (bthome.ROTATION, angle if angle is not None else 0.0),
            (bthome.DISTANCE_MM, water_mm),
        ]
        if gas is None:
            objs.append((bthome.VOLTAGE, volts))
        else:
            # 31 advert bytes: with a gas detector fitted, the voltage gives way (battery % stays).
            objs.append((bthome.GAS, gas))
        return objs

    def advert(self, objs):
        sdata = bthome.service_data(objs, self.cfg["key_bytes"], self.mac, self.counter.next())
        return bthome.adv_payload(sdata, self.cfg["name"] or None)

    def broadcast(self, adv, interval_ms, duration_ms):
        self.adverts.append((adv, interval_ms, duration_ms))
        self.hw.advertise(adv, interval_ms)
        self.hw.sleep_ms(duration_ms)
        self.hw.advertise(None, 0)

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        angle, changed = self.settle_tilt()
        water_mm = self.hw.water_mm()
        changed = self.water.update(water_mm, self.hw.ticks_ms()) or changed
        tamper = self.hw.tamper()
        gas = self.hw.gas()
        state = self.hw.rtc.state()
        previous = state.get("alarms", {})
        changed = changed or previous.get("tamper", False) != tamper or previous.get("gas", False) != bool(gas)
        alarm = self.tilt.active or self.water.active or tamper or bool(gas)
        adv = self.advert(self.objects(angle, water_mm, self.hw.battery_v(), tamper, gas))
        if alarm or changed:
            self.broadcast(adv, cfg["alarm_advert_interval_ms"], cfg["alarm_burst_ms"])
        else:
            n = cfg["heartbeat_adverts"]
            iv = cfg["heartbeat_advert_interval_ms"]
            self.broadcast(adv, iv, n * iv)
        state = self.hw.rtc.state()  # the counter wrote its slot meanwhile
        state["alarms"] = {"tilt": self.tilt.active, "water": self.water.active, "tamper": tamper,
                           "gas": bool(gas)}
        self.hw.rtc.save_state(state)
        return (cfg["alarm_interval_s"] if alarm else cfg["heartbeat_interval_s"]) * 1000

