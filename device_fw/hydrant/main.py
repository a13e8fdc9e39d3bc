# Boot entry of the hydrant build (copy to the board as main.py): one pressure sample, then
# deep sleep.
# The boot itself (error.log, retry, deep sleep) is the core's: manhole/boot.py.

import machine


def wake():
    from hydrant import config, hal, node

    cfg = config.load("config.json")
    hw = hal.Hardware(cfg)
    return hw, node.HydrantNode(hw, cfg).wake()


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
