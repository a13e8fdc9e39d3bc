# Hardware layer: the only module that touches `machine`, `bluetooth` and `esp32`.
#
# ESP32 + LIS3DH accelerometer (I2C), a level transducer on an ADC pin, the battery through a
# divider on another, tamper (reed switch, high when the housing is opened) and an optional gas detector (active high).
# On the host, tests put stand-ins for `machine`, `bluetooth`, `esp32` and `time` on the path.

import binascii
import json
import time

import bluetooth
import machine

LIS3DH_WHO_AM_I = 0x0F
LIS3DH_ID = 0x33
LIS3DH_CTRL1 = 0x20
LIS3DH_CTRL4 = 0x23
LIS3DH_OUT_X_L = 0x28
LIS3DH_CTRL2 = 0x21
LIS3DH_CTRL3 = 0x22
LIS3DH_CTRL5 = 0x24
LIS3DH_INT1_CFG = 0x30
LIS3DH_INT1_SRC = 0x31
LIS3DH_INT1_THS = 0x32
LIS3DH_INT1_DURATION = 0x33


class RtcSlot:
    """Small state kept in RTC memory across deep sleep (lost on power loss).

    Layout: crc32 (4 bytes, little endian) + JSON. Garbage after power-up fails the CRC: empty state.
    """

    def __init__(self, rtc):
        self._rtc = rtc

    def state(self):
        raw = bytes(self._rtc.memory())
        if len(raw) < 5:
            return {}
        body = raw[4:]
        if int.from_bytes(raw[:4], "little") != binascii.crc32(body) & 0xFFFFFFFF:
            return {}
        try:
            data = json.loads(body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, body):
        raw = json.dumps(body).encode()
        self._rtc.memory((binascii.crc32(raw) & 0xFFFFFFFF).to_bytes(4, "little") + raw)


class CounterRtc:
    """The counter's RTC slot, stored inside the node's RTC state."""

    def __init__(self, slot):
        self._slot = slot

    def get(self):
        v = self._slot.state().get("counter")
        return tuple(v) if isinstance(v, list) and len(v) == 2 else None

    def set(self, value):
        state = self._slot.state()
        state["counter"] = value
        self._slot.save_state(state)


class Hardware:
    def __init__(self, cfg):
        pins = cfg["pins"]
        self.cfg = cfg
        self.i2c = machine.I2C(0, scl=machine.Pin(pins["i2c_scl"]), sda=machine.Pin(pins["i2c_sda"]), freq=400000)
        self.accel_addr = pins["accel_addr"]
        # 11 dB attenuation: the ESP32 ADC reads 0..~3.1 V (0 dB would clip at ~1.1 V)
        self.battery_adc = machine.ADC(machine.Pin(pins["battery_adc"]), atten=machine.ADC.ATTN_11DB)
        self.water_adc = machine.ADC(machine.Pin(pins["water_adc"]), atten=machine.ADC.ATTN_11DB)
        self.tamper_pin = machine.Pin(pins["tamper"], machine.Pin.IN, machine.Pin.PULL_UP)
        self.gas_pin = machine.Pin(pins["gas"], machine.Pin.IN) if cfg["gas"] else None
        self.rtc = RtcSlot(machine.RTC())
        self.ble = bluetooth.BLE()
        self.ble.active(True)
        self._init_accel()

    def _init_accel(self):
        who = self.i2c.readfrom_mem(self.accel_addr, LIS3DH_WHO_AM_I, 1)[0]
        if who != LIS3DH_ID:
            raise OSError("accelerometer: WHO_AM_I 0x%02x, expected 0x33 (LIS3DH)" % who)
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_CTRL1, b"\x57")  # 100 Hz, x/y/z on
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_CTRL4, b"\x08")  # high resolution, +-2 g
        # Motion wake-up on INT1: high-pass filtered, any axis above the threshold, latched until
        # INT1_SRC is read. Gravity (static) is filtered out; lifting or shifting the cover is not.
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_CTRL2, b"\x01")  # HP filter on the INT1 path
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_CTRL3, b"\x40")  # IA1 interrupt on INT1 pin
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_CTRL5, b"\x08")  # latch INT1
        ths = max(1, min(127, int(self.cfg["motion_wake_mg"] / 16)))  # 16 mg per LSB at +-2 g
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_INT1_THS, bytes([ths]))
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_INT1_DURATION, b"\x00")
        self.i2c.writeto_mem(self.accel_addr, LIS3DH_INT1_CFG, b"\x2a")  # XH | YH | ZH, OR
        self.i2c.readfrom_mem(self.accel_addr, LIS3DH_INT1_SRC, 1)  # clear a latched wake-up

    def mac(self):
        return bytes(self.ble.config("mac")[1])

    def accel_g(self):
        raw = self.i2c.readfrom_mem(self.accel_addr, LIS3DH_OUT_X_L | 0x80, 6)  # auto-increment
        out = []
        for i in (0, 2, 4):
            v = raw[i] | raw[i + 1] << 8
            if v & 0x8000:
                v -= 0x10000
            out.append((v >> 4) / 1000.0)  # 12-bit left-justified, 1 mg/digit at +-2 g
        return out

    def battery_v(self):
        return self.battery_adc.read_uv() / 1e6 * self.cfg["battery_divider"]

    def water_mm(self):
        v = self.water_adc.read_uv() / 1e6
        return max(0.0, v * self.cfg["water_mm_per_v"] + self.cfg["water_offset_mm"])

    def tamper(self):
        # Reed switch to ground, closed by the magnet while the housing is shut: open -> pulled high.
        return self.tamper_pin.value() == 1

    def gas(self):
        return bool(self.gas_pin.value()) if self.gas_pin is not None else None

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def advertise(self, adv_data, interval_ms):
        if adv_data is None:
            self.ble.gap_advertise(None)
        else:
            self.ble.gap_advertise(int(interval_ms * 1000), adv_data=adv_data, connectable=False)

    def woke_from_deep_sleep(self):
        return machine.reset_cause() == machine.DEEPSLEEP_RESET

    def deep_sleep(self, ms):
        # Wake early on the accelerometer's motion interrupt, the tamper switch or gas.
        switches = [self.tamper_pin]
        if self.gas_pin is not None:
            switches.append(self.gas_pin)
        self.sleep_waking_on(ms, switches)

    def sleep_waking_on(self, ms, switches):
        """Deep-sleep `ms`, woken early by the accelerometer or a switch going high.

        EXT1 wake-up is level-triggered: a switch already high (housing left open, gas, an
        outlet open for hours) would wake the chip at once, over and over. It is left out: it is
        an active alarm, and the alarm_interval_s timer re-reports it and sees it clear. INT1 is
        latched by the LIS3DH and cleared at boot: high now is new motion, so it always wakes.
        A switch that went high after the node read it (while advertising) is an alarm the node
        has not sent yet: the sleep is cut to alarm_interval_s so it is sent within that.
        """
        import esp32

        low = [p for p in switches if not p.value()]
        if len(low) < len(switches):
            ms = min(ms, self.cfg["alarm_interval_s"] * 1000)
        wake = [machine.Pin(self.cfg["pins"]["accel_int"])] + low
        esp32.wake_on_ext1(pins=tuple(wake), level=esp32.WAKEUP_ANY_HIGH)
        self.ble.active(False)
        machine.deepsleep(ms)
