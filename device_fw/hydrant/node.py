# One wake of the hydrant node: sample the pressure, settle the tilt alarm, read the outlet and
# tamper switches; advertise at once on a pressure change above `pressure_step_mpa`, on any alarm
# change (fast burst) and while an alarm is active (every `alarm_interval_s`), otherwise only when
# the heartbeat is due. Deep-sleeps `pressure_interval_s` between samples.

from manhole import bthome
from manhole.core import TiltNode


class HydrantNode(TiltNode):
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        state = hw.rtc.state()
        self.prev = state.get("alarms", {})
        TiltNode.__init__(self, hw, cfg, self.prev.get("tilt", False), counter_path)
        self.last_p = state.get("last_p")  # pressure in the last advert (None: send at once)
        self.beat_s = state.get("beat_s", 0)

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        angle, changed = self.settle_tilt()
        changed = self.tilt_fault(angle) or changed
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
            ] + self.tilt_objects(angle)
            self.send(self.advert(objs), changed or moved or alarm)
            self.last_p, self.beat_s = p, 0
        sleep_s = cfg["alarm_interval_s"] if alarm else cfg["pressure_interval_s"]
        self.beat_s += sleep_s
        state = self.hw.rtc.state()
        state["alarms"] = {"tilt": self.tilt.active, "outlet": outlet, "tamper": tamper}
        state["last_p"] = self.last_p
        state["beat_s"] = self.beat_s
        self.hw.rtc.save_state(state)
        return sleep_s * 1000
