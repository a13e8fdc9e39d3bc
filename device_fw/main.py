# Boot entry of the manhole node: load config.json, run one wake cycle, deep-sleep.

from manhole import config, hal, node


def main():
    cfg = config.load("config.json")
    hw = hal.Hardware(cfg)
    node.run(hw, cfg)


main()
