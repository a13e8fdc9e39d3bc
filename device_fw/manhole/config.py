# Node configuration: config.json next to main.py. Every setting has a default except the key.

import json
import math

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


# Settings every build has: its adverts (a BLE advertising interval is 20 ms..10.24 s), the burst
# (at least a few adverts; the node is awake all of it) and the battery scale.
_COMMON_RANGES = {
    "heartbeat_advert_interval_ms": (20, 10240),
    "alarm_advert_interval_ms": (20, 10240),
    "alarm_burst_ms": (100, 10000),
    "battery_divider": (1.0, 10.0),
    "battery_empty_v": (0.5, 12.0),
    "battery_full_v": (0.5, 12.0),
}

# Gravity at rest reads about 1 g on any axis combination; a reference far from it is a typo (a
# missing digit) or a reading of a dead sensor, and would leave the node without a tilt.
REFERENCE_G = (0.5, 1.5)

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


def check_reference(v):
    """`reference_g`: three numbers, gravity as the sensor saw it with the node installed."""
    if not isinstance(v, (list, tuple)) or len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise ConfigError("reference_g: %r is not three numbers (g on x, y, z with the node installed)" % (v,))
    g = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    lo, hi = REFERENCE_G
    if not lo <= g <= hi:
        raise ConfigError("reference_g: %r is %.2f g, outside %s..%s g: gravity at rest reads about 1 g "
                          "(read it from the installed node, device_fw/README.md)" % (v, g, lo, hi))


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
    checks = list((_RANGES if ranges is None else ranges).items())
    checks += [(k, r) for k, r in _COMMON_RANGES.items() if k in defaults]
    for k, (lo, hi) in checks:
        v = cfg[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError("%s: %r is not a number (allowed %s..%s)" % (k, v, lo, hi))
        if not lo <= v <= hi:
            raise ConfigError("%s: %s outside %s..%s" % (k, v, lo, hi))
    if cfg["battery_empty_v"] >= cfg["battery_full_v"]:
        raise ConfigError("battery_empty_v (%s V) must be below battery_full_v (%s V)"
                          % (cfg["battery_empty_v"], cfg["battery_full_v"]))
    if cfg["alarm_burst_ms"] < cfg["alarm_advert_interval_ms"]:
        raise ConfigError("alarm_burst_ms (%s) shorter than alarm_advert_interval_ms (%s): no advert in the burst"
                          % (cfg["alarm_burst_ms"], cfg["alarm_advert_interval_ms"]))
    if "reference_g" in cfg:
        check_reference(cfg["reference_g"])
    if "tilt_clear_deg" in cfg and cfg["tilt_clear_deg"] > cfg["tilt_threshold_deg"]:
        raise ConfigError("tilt_clear_deg above tilt_threshold_deg")
    if "water_clear_mm" in cfg and cfg["water_clear_mm"] > cfg["water_high_mm"]:
        raise ConfigError("water_clear_mm above water_high_mm")
    name = cfg["name"]
    if not isinstance(name, str) or len(name.encode()) > name_room:
        raise ConfigError("name: %r does not fit the advert: this build has room for %d bytes" % (name, name_room))
    cfg["key_bytes"] = parse_key(cfg["key"])
    return cfg
