# Boots the node firmware on the host stand-ins, like the chip would: power-on or deep-sleep wake.

import bluetooth
import machine
import time

from manhole import config, hal, node

KEY = "231d39c1d7cc1ab1aee224cd096db932"


def make_config(**overrides):
    raw = {"key": KEY}
    raw.update(overrides)
    return config.validate(raw)


def power_loss():
    """Battery out and back: RTC memory is gone, flash stays."""
    machine.SIM.reset(keep_rtc=False)


def boot(cfg, counter_path="counter.dat"):
    """One boot: build the hardware, run one wake. Returns (node, sleep_ms).

    Sets the reset cause from how the previous boot ended (deep sleep or not).
    """
    del bluetooth.ADVERTS[:]
    hw = hal.Hardware(cfg)
    n = node.Node(hw, cfg, counter_path)
    sleep_ms = n.wake()
    try:
        hw.deep_sleep(sleep_ms)
    except machine.DeepSleep as e:
        machine.SIM.reset_cause = machine.DEEPSLEEP_RESET
        time.advance(e.asleep_ms)  # the timer, or 0: an EXT1 pin already high woke it at once
    return n, sleep_ms


def adverts():
    """Advert payloads started during the last boot (stops left out)."""
    return [a[2] for a in bluetooth.ADVERTS if a[2] is not None]
