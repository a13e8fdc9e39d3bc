# Node configuration: config.json next to main.py. Every setting has a default except the key.

import json

DEFAULTS = {
    "key": None,  # 32 hex digits, per node; provisioned with tools in device_fw/README.md
    "name": "",  # optional local name in the advert: no room in the cover's (see NAME_ROOM)
    "tilt_threshold_deg": 10.0,  # vendor default: > 10 deg is tilted
    "tilt_clear_deg": 7.0,
    "tilt_hold_ms": 2000,  # held >= 2 s: passing vehicles rock covers for less
    "sample_interval_ms": 200,
    "motion_wake_mg": 256,  # accelerometer wakes the node on a change above this (LIS3DH INT1)
    "reference_g": [0.0, 0.0, 1.0],  # gravity with the cover closed (set at installation)
    "water_high_mm": 500,
    "water_clear_mm": 450,
    "water_mm_per_v": 1000.0,  # level transducer: mm per volt at the ADC pin
    "water_offset_mm": 0.0,
    "battery_divider": 2.0,  # battery voltage = ADC voltage x divider
    "battery_empty_v": 3.0,  # Li-SOCl2 primary cell: 3.6 V new, ~3.0 V empty
    "battery_full_v": 3.6,
    "gas": False,  # a gas detector is fitted (digital input)
    "heartbeat_interval_s": 300,  # deep sleep between heartbeats
    "heartbeat_adverts": 3,
    "heartbeat_advert_interval_ms": 200,
    "alarm_interval_s": 10,  # while any alarm is active, re-report this often
    "alarm_burst_ms": 3000,  # advertise this long on an alarm change
    "alarm_advert_interval_ms": 50,
    "counter_block": 64,
    "pins": {
        "i2c_scl": 22,
        "i2c_sda": 21,
        "accel_addr": 0x18,
        "accel_int": 26,
        "battery_adc": 35,
        "water_adc": 34,
        "tamper": 27,
        "gas": 25,
    },
}

# Physical limits the firmware enforces so that a typo cannot make a node useless or blind.
_RANGES = {
    "tilt_threshold_deg": (1.0, 90.0),  # > 90 deg always alarms, whatever the config says
    "tilt_clear_deg": (0.0, 90.0),
    "tilt_hold_ms": (0, 60000),
    "sample_interval_ms": (20, 5000),
    "heartbeat_interval_s": (10, 86400),
    "alarm_interval_s": (1, 3600),
    "heartbeat_adverts": (1, 50),
    "counter_block": (1, 100000),
    "motion_wake_mg": (16, 2032),
}


# Bytes left for the name in the 31-byte advert: a name's AD structure is 2 bytes + the name.
# The cover's advert is 30 bytes (29 with gas): no name fits. Each build passes its own.
NAME_ROOM = 0


class ConfigError(ValueError):
    pass


def parse_key(text):
    if text is None:
        raise ConfigError("key: missing (32 hex digits)")
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 32:
        raise ConfigError("key: need 32 hex digits, got %d" % len(text))
    try:
        return bytes(int(text[i : i + 2], 16) for i in range(0, 32, 2))
    except ValueError:
        raise ConfigError("key: not hex")


def load(path="config.json", defaults=None, ranges=None):
    with open(path) as f:
        return validate(json.load(f), defaults, ranges)


def validate(raw, defaults=None, ranges=None, name_room=NAME_ROOM):
    """Check a node's settings. Other builds of the family (bedfoot, hydrant) pass their own
    `defaults`, `ranges` and `name_room` (bytes their advert leaves for a name), built on these."""
    defaults = DEFAULTS if defaults is None else defaults
    cfg = {}
    for k, v in defaults.items():
        cfg[k] = v
    for k, v in raw.items():
        if k not in defaults:
            raise ConfigError("%s: unknown setting" % k)
        if k == "pins":
            pins = dict(defaults["pins"])
            pins.update(v)
            v = pins
        cfg[k] = v
    for k, (lo, hi) in (_RANGES if ranges is None else ranges).items():
        if not lo <= cfg[k] <= hi:
            raise ConfigError("%s: %s outside %s..%s" % (k, cfg[k], lo, hi))
    if "tilt_clear_deg" in cfg and cfg["tilt_clear_deg"] > cfg["tilt_threshold_deg"]:
        raise ConfigError("tilt_clear_deg above tilt_threshold_deg")
    if "water_clear_mm" in cfg and cfg["water_clear_mm"] > cfg["water_high_mm"]:
        raise ConfigError("water_clear_mm above water_high_mm")
    name = cfg["name"]
    if not isinstance(name, str) or len(name.encode()) > name_room:
        raise ConfigError("name: %r does not fit the advert: this build has room for %d bytes" % (name, name_room))
    cfg["key_bytes"] = parse_key(cfg["key"])
    return cfg
