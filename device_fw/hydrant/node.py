# One wake of the hydrant node: sample the pressure, settle the tilt alarm, read the outlet and
# tamper switches; advertise at once on a pressure change above `pressure_step_mpa`, on any alarm
# change (fast burst) and while an alarm is active (every `alarm_interval_s`), otherwise only when
# the heartbeat is due. Deep-sleeps `pressure_interval_s` between samples.

from manhole import bthome
from manhole.alarm import HoldAlarm
from manhole.counter import Counter, CounterStore
from manhole.hal import CounterRtc
from manhole.tilt import tilt_deg

ALWAYS_ALARM_DEG = 90.0


class HydrantNode:
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        self.hw = hw
        self.cfg = cfg
        self.mac = hw.mac()
        self.counter = Counter(CounterStore(CounterRtc(hw.rtc), counter_path), cfg["counter_block"])
        state = hw.rtc.state()
        self.prev = state.get("alarms", {})
        threshold = min(cfg["tilt_threshold_deg"], ALWAYS_ALARM_DEG)
        self.tilt = HoldAlarm(threshold, min(cfg["tilt_clear_deg"], threshold), cfg["tilt_hold_ms"],
                              self.prev.get("tilt", False))
        self.last_p = state.get("last_p")  # pressure in the last advert (None: send at once)
        self.beat_s = state.get("beat_s", 0)
        self.adverts = []

    def battery_pct(self, volts):
        lo, hi = self.cfg["battery_empty_v"], self.cfg["battery_full_v"]
        pct = (volts - lo) / (hi - lo) * 100.0
        return 0 if pct < 0 else 100 if pct > 100 else int(pct + 0.5)

    def read_tilt(self):
        return tilt_deg(self.hw.accel_g(), self.cfg["reference_g"])

    def settle_tilt(self):
        start = self.hw.ticks_ms()
        angle = self.read_tilt()
        changed = self.tilt.update(angle, start)
        limit = 3 * self.cfg["tilt_hold_ms"] + self.cfg["sample_interval_ms"]
        while self.tilt.pending() and self.hw.ticks_diff(self.hw.ticks_ms(), start) < limit:
            self.hw.sleep_ms(self.cfg["sample_interval_ms"])
            angle = self.read_tilt()
            changed = self.tilt.update(angle, self.hw.ticks_ms()) or changed
        return angle, changed

    def broadcast(self, adv, interval_ms, duration_ms):
        self.adverts.append((adv, interval_ms, duration_ms))
        self.hw.advertise(adv, interval_ms)
        self.hw.sleep_ms(duration_ms)
        self.hw.advertise(None, 0)

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        angle, changed = self.settle_tilt()
        p = self.hw.pressure_mpa()
        outlet = self.hw.outlet()
        tamper = self.hw.tamper()
        changed = changed or outlet != self.prev.get("outlet", False) or tamper != self.prev.get("tamper", False)
        moved = self.last_p is None or abs(p - self.last_p) > cfg["pressure_step_mpa"]
        alarm = self.tilt.active or outlet or tamper
        due = self.beat_s >= cfg["heartbeat_interval_s"]
        if changed or moved or alarm or due:
            objs = [
                (bthome.BATTERY, self.battery_pct(self.hw.battery_v())),
                (bthome.PRESSURE, p * 10000.0),  # MPa -> hPa
                (bthome.OPENING, outlet),
                (bthome.TAMPER, tamper),
                (bthome.ROTATION, angle if angle is not None else 0.0),
            ]
            sdata = bthome.service_data(objs, cfg["key_bytes"], self.mac, self.counter.next())
            adv = bthome.adv_payload(sdata, cfg["name"] or None)
            if changed or moved or alarm:
                self.broadcast(adv, cfg["alarm_advert_interval_ms"], cfg["alarm_burst_ms"])
            else:
                iv = cfg["heartbeat_advert_interval_ms"]
                self.broadcast(adv, iv, cfg["heartbeat_adverts"] * iv)
            self.last_p, self.beat_s = p, 0
        sleep_s = cfg["alarm_interval_s"] if alarm else cfg["pressure_interval_s"]
        self.beat_s += sleep_s
        state = self.hw.rtc.state()
        state["alarms"] = {"tilt": self.tilt.active, "outlet": outlet, "tamper": tamper}
        state["last_p"] = self.last_p
        state["beat_s"] = self.beat_s
        self.hw.rtc.save_state(state)
        return sleep_s * 1000
