# The encryption counter: never repeats, across deep sleep, reboots and power loss.
#
# Flash holds the *reservation*: the first counter not yet handed out for sure. Before the node
# uses a counter at or above it, it writes reservation + block to flash (write-ahead, atomically
# through a temp file and rename), then hands out counters up to it with no flash write. RTC
# memory (kept through deep sleep, lost on power loss) holds the next counter, so deep-sleep wakes
# do not burn a block. After power loss the node restarts at the reservation: at most one block of
# counters is skipped, none is reused. Flash wear: one write per `block` adverts.

import os

FILE = "counter.dat"


class CounterStore:
    """Flash + RTC storage of the counter. `rtc` has get() -> (next, reserved) | None and set()."""

    def __init__(self, rtc, path=FILE):
        self.rtc = rtc
        self.path = path

    def read_reserved(self):
        # No file (a new node, or its flash erased: esptool erase_flash, LittleFS reformatted) or a
        # bad one: the counter starts again at 1. Said in error.log, because a gateway that heard
        # this node before refuses it as a replay until it is reset there or given a new key.
        try:
            with open(self.path) as f:
                text = f.read().strip()
            return int(text)
        except OSError:
            why = "missing"
        except ValueError:
            why = "unreadable"
        from manhole.errlog import log_message

        log_message(
            "counter: %s %s, counter starts at 1: a gateway that heard this node before refuses it "
            "(replay) until `citynerve diag ble reset-counter DEVICE` there, or provision a new key" % (self.path, why)
        )
        return 0

    def write_reserved(self, value):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(value))
        os.rename(tmp, self.path)  # atomic on LittleFS: old or new, never half


class Counter:
    MAX = 0xFFFFFFFF

    def __init__(self, store, block=64):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.store = store
        self.block = block
        self.reserved = store.read_reserved()
        saved = store.rtc.get()  # (next counter, reservation it was taken under) or None
        # Trust RTC only if it was written under the reservation flash holds now: a value from an
        # older reservation (or any garbage that passed the CRC) could hand out a used counter.
        if saved is not None and saved[1] == self.reserved and saved[0] <= self.reserved:
            self.next_value = saved[0]
        else:
            self.next_value = self.reserved
        if self.next_value < 1:
            self.next_value = 1

    def next(self):
        value = self.next_value
        if value > self.MAX:
            raise OverflowError("counter exhausted: re-key the node")
        if value >= self.reserved:
            self.reserved = min(value + self.block, self.MAX + 1)
            self.store.write_reserved(self.reserved)
        self.next_value = value + 1
        self.store.rtc.set((self.next_value, self.reserved))
        return value
