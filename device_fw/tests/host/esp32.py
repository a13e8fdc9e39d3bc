# Host stand-in for MicroPython's `esp32`: records the deep-sleep wake sources.
#
# WAKE logs every wake_on_ext1() call; ARMED holds this boot's EXT1 setting, which
# machine.deepsleep() uses (and clears: the chip resets on waking, the setting with it).

WAKEUP_ALL_LOW = 0
WAKEUP_ANY_HIGH = 1
WAKE = []
ARMED = []


def wake_on_ext1(pins, level):
    ids = tuple(p.id for p in pins)
    WAKE.append((ids, level))
    ARMED[:] = [(ids, level)]
