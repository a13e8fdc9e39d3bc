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
        import esp32

        pins = self.cfg["pins"]
        # Wake early when knocked (accelerometer), opened (outlet) or tampered with.
        wake = (machine.Pin(pins["accel_int"]), self.tamper_pin, self.outlet_pin)
        esp32.wake_on_ext1(pins=wake, level=esp32.WAKEUP_ANY_HIGH)
        self.ble.active(False)
        machine.deepsleep(ms)
