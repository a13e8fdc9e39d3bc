# Host stand-in for MicroPython's `time`: a virtual clock, so hold times run in no real time.

_now_ms = [1000]


def ticks_ms():
    return _now_ms[0]


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b


def sleep_ms(ms):
    _now_ms[0] += int(ms)


def sleep(s):
    _now_ms[0] += int(s * 1000)


def time():
    return _now_ms[0] // 1000


def advance(ms):
    """Test helper: let time pass without the firmware sleeping."""
    _now_ms[0] += int(ms)
