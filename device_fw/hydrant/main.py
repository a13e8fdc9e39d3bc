# Boot entry of the hydrant build (copy to the board as main.py): one pressure sample, then
# deep sleep. Errors go to error.log (capped: manhole/errlog.py, shared with the manhole node) and
# the node retries later.

import machine

RETRY_MS = 600000


def main():
    try:
        from hydrant import config, hal, node

        cfg = config.load("config.json")
        hw = hal.Hardware(cfg)
        sleep_ms = node.HydrantNode(hw, cfg).wake()
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
        pass  # the core itself is missing or broken: nothing to log with; sleep anyway


main()
