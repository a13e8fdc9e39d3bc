# Boot entry of the manhole node: load config.json, run one wake cycle, deep-sleep.
#
# A node that cannot run (bad config, accelerometer missing, BLE failure) must not sit awake in
# the REPL draining its battery under a manhole cover: it writes the error to error.log and
# deep-sleeps, trying again later. Ctrl-C (KeyboardInterrupt) still reaches the REPL.

import sys

import machine

RETRY_MS = 600000
ERROR_LOG = "error.log"
ERROR_LOG_MAX = 4096


def log_error(exc):
    import os

    try:
        if os.stat(ERROR_LOG)[6] > ERROR_LOG_MAX:
            os.remove(ERROR_LOG)
    except OSError:
        pass
    try:
        with open(ERROR_LOG, "a") as f:
            sys.print_exception(exc, f)
    except OSError:
        pass  # flash full or read-only: nothing more to do


def main():
    try:
        from manhole import config, hal, node

        cfg = config.load("config.json")
        hw = hal.Hardware(cfg)
        sleep_ms = node.Node(hw, cfg).wake()
    except Exception as exc:
        log_error(exc)
        machine.deepsleep(RETRY_MS)
        return
    hw.deep_sleep(sleep_ms)


main()
