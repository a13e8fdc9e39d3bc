# Boot entry of the bed-foot build (copy to the board as main.py): one look at the strip, then
# deep sleep. Errors go to error.log (capped: manhole/errlog.py, shared with the manhole node) and
# the node retries later.

import machine

RETRY_MS = 600000


def main():
    try:
        from bedfoot import config, hal, node

        cfg = config.load("config.json")
        hw = hal.Hardware(cfg)
        sleep_ms = node.BedNode(hw, cfg).wake()
    except Exception as exc:
        try:
            from manhole.errlog import log_error

            log_error(exc)
        except Exception:
            pass  # the core itself is missing or broken: nothing to log with; retry anyway
        machine.deepsleep(RETRY_MS)
        return
    hw.deep_sleep(sleep_ms)


main()
