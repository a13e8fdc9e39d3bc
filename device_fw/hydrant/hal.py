# Hydrant hardware: the manhole node's board (ESP32, LIS3DH, ADCs, tamper switch) with the level
# input used for the pressure transducer and one more switch on the outlet.

import machine

from manhole import hal as core


class Hardware(core.Hardware):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.outlet_pin = machine.Pin(cfg["pins"]["outlet"], machine.Pin.IN, machine.Pin.PULL_DOWN)

    def pressure_mpa(self):
        v = self.water_adc.read_uv() / 1e6
        return max(0.0, (v - self.cfg["pressure_zero_v"]) * self.cfg["pressure_mpa_per_v"])

    def outlet(self):
        return self.outlet_pin.value() == 1

    def deep_sleep(self, ms):
        # Wake early when knocked (accelerometer), tampered with or opened (outlet).
        self.sleep_waking_on(ms, [self.tamper_pin, self.outlet_pin])
