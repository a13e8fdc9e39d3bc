import os

from manhole.counter import Counter, CounterStore


class Rtc:
    def __init__(self):
        self.v = None

    def get(self):
        return self.v

    def set(self, v):
        self.v = v


def test_counts_up_and_reserves_ahead():
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=8)
    got = [c.next() for _ in range(20)]
    assert got == list(range(1, 21)), got
    assert CounterStore(rtc).read_reserved() == 25  # written before 17 was used: 17 + 8


def test_deep_sleep_keeps_going_without_skipping():
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=8)
    for _ in range(5):
        c.next()
    c2 = Counter(CounterStore(rtc), block=8)  # woke from deep sleep: RTC kept
    assert c2.next() == 6


def test_power_loss_skips_but_never_repeats():
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=8)
    used = [c.next() for _ in range(5)]
    rtc.v = None  # RTC memory lost
    c2 = Counter(CounterStore(rtc), block=8)
    nxt = c2.next()
    assert nxt > max(used), (nxt, used)
    assert nxt == 9  # the rest of the reserved block is skipped


def test_corrupt_rtc_is_not_trusted():
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=8)
    for _ in range(5):
        c.next()
    rtc.v = (2, 1)  # taken under an older reservation: stale
    assert Counter(CounterStore(rtc), block=8).next() == 9


def test_crash_during_reservation_write_keeps_old_file():
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=4)
    for _ in range(3):
        c.next()
    with open("counter.dat.tmp", "w") as f:  # a half-written temp file from a crash
        f.write("9")
    assert CounterStore(rtc).read_reserved() == 5
    os.remove("counter.dat.tmp")


def test_many_reboots_never_repeat():
    rtc = Rtc()
    seen = set()
    for boot in range(30):
        if boot % 3 == 0:
            rtc.v = None  # power loss every third boot
        c = Counter(CounterStore(rtc), block=5)
        for _ in range(boot % 7 + 1):
            v = c.next()
            assert v not in seen, v
            seen.add(v)


def _error_log():
    try:
        with open("error.log") as f:
            return f.read()
    except OSError:
        return ""


def test_a_missing_counter_file_is_said_in_the_error_log():
    # esptool erase_flash: counter.dat is gone, the counter starts again at 1, and the gateway that
    # heard the node before refuses it as a replay. The node says why in error.log.
    try:
        os.remove("error.log")
    except OSError:
        pass
    rtc = Rtc()
    c = Counter(CounterStore(rtc), block=8)
    assert c.next() == 1
    log = _error_log()
    assert "counter.dat missing, counter starts at 1" in log, log
    assert "reset-counter" in log, log
    Counter(CounterStore(rtc), block=8)  # the file is there now: nothing more logged
    assert _error_log() == log
    with open("counter.dat", "w") as f:
        f.write("12x")
    assert CounterStore(rtc).read_reserved() == 0
    assert "counter.dat unreadable" in _error_log()
    os.remove("error.log")
