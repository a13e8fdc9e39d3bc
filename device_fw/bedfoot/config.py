# Bed-foot node settings: config.json next to main.py. Built on the manhole node's config checks.

from manhole import config as core

ConfigError = core.ConfigError

DEFAULTS = {
    "key": None,  # 32 hex digits, per node
    "name": "",
    "occupied_v": 1.2,  # strip divider voltage above this: someone lies on the bed
    "empty_v": 0.8,  # below this: the bed is empty (between the two: no change)
    "strip_fault_v": 3.0,  # at or above this: the ADC's top, a shorted strip or wire, not a person (fault)
    "debounce_s": 20,  # a new state must hold this long before it is sent (turning over, sitting up)
    "sample_interval_s": 5,  # deep sleep between two looks at the strip (a few ms awake)
    "heartbeat_interval_s": 600,
    "heartbeat_adverts": 3,
    "heartbeat_advert_interval_ms": 200,
    "alarm_burst_ms": 3000,  # advertise this long when the state changes
    "alarm_advert_interval_ms": 50,
    "battery_divider": 2.0,
    "battery_empty_v": 3.0,
    "battery_full_v": 3.6,
    "counter_block": 64,
    "pins": {"battery_adc": 35, "load_adc": 34},
}

RANGES = {
    "debounce_s": (0, 600),
    "sample_interval_s": (1, 60),
    "heartbeat_interval_s": (10, 86400),
    "heartbeat_adverts": (1, 50),
    "counter_block": (1, 100000),
    "occupied_v": (0.1, 3.3),
    "empty_v": (0.0, 3.3),
    "strip_fault_v": (1.3, 3.3),
}


NAME_ROOM = 9  # the advert is 20 bytes: a name of up to 9 bytes fills it to 31


def validate(raw):
    cfg = core.validate(raw, DEFAULTS, RANGES, NAME_ROOM)
    if cfg["empty_v"] > cfg["occupied_v"]:
        raise ConfigError("empty_v above occupied_v")
    if cfg["strip_fault_v"] <= cfg["occupied_v"]:
        raise ConfigError("strip_fault_v (%s V) must be above occupied_v (%s V)" % (cfg["strip_fault_v"], cfg["occupied_v"]))
    return cfg


def load(path="config.json"):
    return validate(_read(path))


def _read(path):
    import json

    with open(path) as f:
        return json.load(f)
