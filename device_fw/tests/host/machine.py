# Host stand-in for MicroPython's `machine` on an ESP32 manhole node: pins, ADCs, an I2C bus with
# an emulated LIS3DH accelerometer, RTC memory and deep sleep. Tests drive it through SIM.

PWRON_RESET = 1
DEEPSLEEP_RESET = 4


class _Sim:
    def __init__(self):
        self.reset()

    def reset(self, keep_rtc=False):
        self.accel = (0.0, 0.0, 1.0)  # g, in the sensor's axes
        self.accel_script = []  # [(until_ms, (x, y, z)), ...]: accel changes with time
        self.pins = {27: 0, 25: 0}  # tamper closed (low), no gas
        self.adc_uv = {35: 1700000, 34: 120000}  # battery/2 = 1.7 V -> 3.4 V; level 0.12 V
        if not keep_rtc:
            self.rtc_memory = b""
        self.reset_cause = PWRON_RESET
        self.deep_sleeps = []  # the ms each deepsleep() asked for
        self.asleep_ms = []  # how long each one slept: 0 when EXT1 woke the chip at once
        self.i2c_writes = []
        self.adc_atten = {}
        self.accel_present = True

    def accel_now(self):
        import time

        now = time.ticks_ms()
        for until, vec in self.accel_script:
            if now < until:
                return vec
        return self.accel


SIM = _Sim()


class DeepSleep(BaseException):
    """Raised by deepsleep(): the chip resets; the harness boots it again.

    A BaseException, like SystemExit: deepsleep() never returns on the chip, so the firmware's
    `except Exception` must not catch it here either. `asleep_ms` is how long the chip slept.
    """

    def __init__(self, ms, asleep_ms):
        super().__init__(ms)
        self.ms = ms
        self.asleep_ms = asleep_ms


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1):
        self.id = id
        self.mode = mode
        self.pull = pull

    def value(self, v=None):
        if v is None:
            return SIM.pins.get(self.id, 0)
        SIM.pins[self.id] = 1 if v else 0


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.pin = pin
        self.atten = atten
        SIM.adc_atten[pin.id] = atten

    def read_uv(self):
        return SIM.adc_uv.get(self.pin.id, 0)


def _lis3dh_out():
    out = bytearray()
    for g in SIM.accel_now():
        n = int(round(g * 1000)) << 4  # 12-bit left-justified, 1 mg/digit
        n = max(-32768, min(32767, n)) & 0xFFFF
        out += bytes([n & 0xFF, n >> 8])
    return bytes(out)


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000):
        self.id = id

    def readfrom_mem(self, addr, reg, n):
        if addr != 0x18 or not SIM.accel_present:
            raise OSError(19)  # ENODEV, as the ESP32 port raises for a missing device
        reg &= 0x7F
        if reg == 0x0F:
            return b"\x33"[:n]
        if reg == 0x28:
            return _lis3dh_out()[:n]
        return bytes(n)

    def writeto_mem(self, addr, reg, data):
        if addr != 0x18 or not SIM.accel_present:
            raise OSError(19)
        SIM.i2c_writes.append((reg, bytes(data)))


class RTC:
    def memory(self, data=None):
        if data is None:
            return SIM.rtc_memory
        if len(data) > 2048:
            raise ValueError("RTC memory holds 2048 bytes")
        SIM.rtc_memory = bytes(data)


def reset_cause():
    return SIM.reset_cause


def deepsleep(ms=0):
    import esp32

    asleep = ms
    for ids, level in esp32.ARMED:
        # EXT1 wake-up is level-triggered: a pin already at the wake level wakes the chip at once.
        if level == esp32.WAKEUP_ANY_HIGH and any(SIM.pins.get(i, 0) for i in ids):
            asleep = 0
    del esp32.ARMED[:]
    SIM.deep_sleeps.append(ms)
    SIM.asleep_ms.append(asleep)
    raise DeepSleep(ms, asleep)


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"
