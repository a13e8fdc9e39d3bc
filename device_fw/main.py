# Boot entry of the manhole node (copy to the board as main.py): load config.json, run one wake
# cycle, deep-sleep.
# The boot itself (error.log, retry, deep sleep) is the core's: manhole/boot.py.

import machine


def wake():
    from manhole import config, hal, node

    cfg = config.load("config.json")
    hw = hal.Hardware(cfg)
    return hw, node.Node(hw, cfg).wake()


try:
    from manhole.boot import run
except Exception:  # the core is missing or broken: nothing to log with; try again in 10 min
    machine.deepsleep(600000)
else:
    run(wake)
