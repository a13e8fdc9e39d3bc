# Host stand-in for MicroPython's `esp32`: records the deep-sleep wake sources.

WAKEUP_ALL_LOW = 0
WAKEUP_ANY_HIGH = 1
WAKE = []


def wake_on_ext1(pins, level):
    WAKE.append((tuple(p.id for p in pins), level))
