# Boot of every build (its main.py calls run): one wake cycle, then deep sleep.
#
# A node that cannot run (bad config, sensor missing, BLE failure) must not sit awake in the REPL
# draining its battery in the street: it writes the error to error.log (capped, errlog.py) and
# deep-sleeps, trying again later. Ctrl-C (KeyboardInterrupt) still reaches the REPL.

import machine

RETRY_MS = 600000


def run(wake):
    """`wake()` loads the build's config and hardware and runs one wake cycle; it returns the
    hardware and how long to sleep."""
    try:
        hw, sleep_ms = wake()
    except Exception as exc:
        log(exc)
        machine.deepsleep(RETRY_MS)
        return
    try:
        hw.deep_sleep(sleep_ms)  # with its early-wake pins
    except Exception as exc:  # a wake pin that is no RTC GPIO (ValueError), no EXT1 (AttributeError)
        # Logged at a power-on or reset (the boot an installer watches), not at every wake from
        # deep sleep: the same error every heartbeat would write the flash every few minutes.
        if machine.reset_cause() != machine.DEEPSLEEP_RESET:
            log(exc)
        machine.deepsleep(sleep_ms)  # the timer alone


def log(exc):
    try:
        from manhole.errlog import log_error

        log_error(exc)
    except Exception:
        pass  # the log module is missing or broken: nothing to log with; sleep anyway
