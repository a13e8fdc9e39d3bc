# Boot entry of the bed-foot build (copy to the board as main.py): one look at the strip, then
# deep sleep. Errors go to error.log and the node retries later, like the manhole node.

import machine

RETRY_MS = 600000


def main():
    try:
        from bedfoot import config, hal, node

        cfg = config.load("config.json")
        hw = hal.Hardware(cfg)
        sleep_ms = node.BedNode(hw, cfg).wake()
    except Exception as exc:
        import sys

        with open("error.log", "a") as f:
            sys.print_exception(exc, f)
        machine.deepsleep(RETRY_MS)
        return
    hw.deep_sleep(sleep_ms)


main()
