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
from manhole.core import TiltNode


class Node(TiltNode):
    def __init__(self, hw, cfg, counter_path="counter.dat"):
        alarms = hw.rtc.state().get("alarms", {})  # RTC state is checksummed: empty after power loss
        TiltNode.__init__(self, hw, cfg, alarms.get("tilt", False), counter_path)
        self.water = HoldAlarm(cfg["water_high_mm"], cfg["water_clear_mm"], 0, alarms.get("water", False))

    def objects(self, angle, water_mm, volts, tamper, gas):
        objs = [
            (bthome.BATTERY, self.battery_pct(volts)),
            (bthome.OPENING, self.tilt.active),
            (bthome.MOISTURE, self.water.active),
            (bthome.TAMPER, tamper),
            (bthome.DISTANCE_MM, water_mm),
        ]
        objs += self.tilt_objects(angle)  # 0x26 in 0x3F's place: the advert stays within 31 bytes
        if gas is None:
            objs.append((bthome.VOLTAGE, volts))
        else:
            # 31 advert bytes: with a gas detector fitted, the voltage gives way (battery % stays).
            objs.append((bthome.GAS, gas))
        return objs

    def wake(self):
        """One wake cycle. Returns the deep-sleep time in ms."""
        cfg = self.cfg
        angle, changed = self.settle_tilt()
        changed = self.tilt_fault(angle) or changed
        water_mm = self.hw.water_mm()
        changed = self.water.update(water_mm, self.hw.ticks_ms()) or changed
        tamper = self.hw.tamper()
        gas = self.hw.gas()
        state = self.hw.rtc.state()
        previous = state.get("alarms", {})
        changed = changed or previous.get("tamper", False) != tamper or previous.get("gas", False) != bool(gas)
        alarm = self.tilt.active or self.water.active or tamper or bool(gas)
        objs = self.objects(angle, water_mm, self.hw.battery_v(), tamper, gas)
        self.send(self.advert(objs), alarm or changed)
        state = self.hw.rtc.state()  # the counter wrote its slot meanwhile
        state["alarms"] = {"tilt": self.tilt.active, "water": self.water.active, "tamper": tamper,
                           "gas": bool(gas)}
        self.hw.rtc.save_state(state)
        return (cfg["alarm_interval_s"] if alarm else cfg["heartbeat_interval_s"]) * 1000

