# Bed-foot hardware: an ESP32, a force-sensing strip in a divider on one ADC pin, the battery
# through a divider on another. The only module of the build that touches `machine` and `bluetooth`.

import time

import bluetooth
import machine

from manhole.hal import RtcSlot


class Hardware:
    def __init__(self, cfg):
        pins = cfg["pins"]
        self.cfg = cfg
        self.battery_adc = machine.ADC(machine.Pin(pins["battery_adc"]), atten=machine.ADC.ATTN_11DB)
        self.load_adc = machine.ADC(machine.Pin(pins["load_adc"]), atten=machine.ADC.ATTN_11DB)
        self.rtc = RtcSlot(machine.RTC())
        self.ble = bluetooth.BLE()
        self.ble.active(True)

    def mac(self):
        return bytes(self.ble.config("mac")[1])

    def load_v(self):
        return self.load_adc.read_uv() / 1e6

    def battery_v(self):
        return self.battery_adc.read_uv() / 1e6 * self.cfg["battery_divider"]

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def advertise(self, adv_data, interval_ms):
        if adv_data is None:
            self.ble.gap_advertise(None)
        else:
            self.ble.gap_advertise(int(interval_ms * 1000), adv_data=adv_data, connectable=False)

    def deep_sleep(self, ms):
        self.ble.active(False)
        machine.deepsleep(ms)  # timer wake: the strip is looked at every sample_interval_s
