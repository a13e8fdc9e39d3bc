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
except Exception as exc:  # the core is missing or broken (an older core: no boot.py)
    try:
        from manhole.errlog import log_error

        log_error(exc)
    except Exception:
        pass  # nothing to log with either
    machine.deepsleep(600000)  # try again in 10 min
else:
    run(wake)
