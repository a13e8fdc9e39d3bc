# Host stand-in for MicroPython's `esp32`: records the deep-sleep wake sources.
#
# WAKE logs every wake_on_ext1() call; ARMED holds this boot's EXT1 setting, which
# machine.deepsleep() uses (and clears: the chip resets on waking, the setting with it).
# Like ports/esp32/modesp32.c on an ESP32, only RTC GPIOs can be EXT1 pins ("invalid pin").

WAKEUP_ALL_LOW = 0
WAKEUP_ANY_HIGH = 1
WAKE = []
ARMED = []
RTC_GPIOS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)


def wake_on_ext1(pins, level):
    ids = tuple(p.id for p in pins)
    if any(i not in RTC_GPIOS for i in ids):
        raise ValueError("invalid pin")
    WAKE.append((ids, level))
    ARMED[:] = [(ids, level)]
