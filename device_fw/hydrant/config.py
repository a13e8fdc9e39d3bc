# Hydrant node settings: config.json next to main.py. Built on the manhole node's config checks.

import json

from manhole import config as core

ConfigError = core.ConfigError

DEFAULTS = {
    "key": None,  # 32 hex digits, per node
    "name": "",
    "tilt_threshold_deg": 10.0,  # a hydrant barrel stands plumb: beyond 10 deg it was knocked
    "tilt_clear_deg": 7.0,
    "tilt_hold_ms": 2000,  # a truck passing shakes it for less
    "sample_interval_ms": 200,
    "motion_wake_mg": 256,
    "reference_g": [0.0, 0.0, 1.0],  # gravity as installed (set at installation)
    "pressure_zero_v": 0.25,  # transducer output at 0 MPa, at the ADC pin (after the divider)
    "pressure_mpa_per_v": 0.8,  # 0-1.6 MPa over 0.25-2.25 V
    "pressure_step_mpa": 0.01,  # send at once on a change above this since the last advert
    "pressure_interval_s": 10,  # deep sleep between two pressure samples
    "heartbeat_interval_s": 300,
    "heartbeat_adverts": 3,
    "heartbeat_advert_interval_ms": 200,
    "alarm_interval_s": 10,
    "alarm_burst_ms": 3000,
    "alarm_advert_interval_ms": 50,
    "battery_divider": 2.0,
    "battery_empty_v": 3.0,
    "battery_full_v": 3.6,
    "gas": False,  # (shared hardware layer: no gas detector on a hydrant)
    "counter_block": 64,
    "pins": {
        "i2c_scl": 22,
        "i2c_sda": 21,
        "accel_addr": 0x18,
        "accel_int": 26,
        "battery_adc": 35,
        "water_adc": 34,  # the pressure transducer
        "tamper": 27,
        "gas": 25,
        "outlet": 14,  # reed switch on the outlet cap / valve spindle: high = opened
    },
}

RANGES = {
    "tilt_threshold_deg": (1.0, 90.0),
    "tilt_clear_deg": (0.0, 90.0),
    "tilt_hold_ms": (0, 60000),
    "sample_interval_ms": (20, 5000),
    "pressure_zero_v": (0.0, 3.0),  # at the ADC pin: 11 dB attenuation reads 0..~3.1 V
    "pressure_mpa_per_v": (0.01, 100.0),
    "pressure_step_mpa": (0.001, 1.0),
    "pressure_interval_s": (1, 600),
    "heartbeat_interval_s": (10, 86400),
    "alarm_interval_s": (1, 3600),
    "heartbeat_adverts": (1, 50),
    "counter_block": (1, 100000),
    "motion_wake_mg": (16, 2032),
}


NAME_ROOM = 3  # the advert is 26 bytes: a name of up to 3 bytes fills it to 31


def validate(raw):
    return core.validate(raw, DEFAULTS, RANGES, NAME_ROOM)


def load(path="config.json"):
    with open(path) as f:
        return validate(json.load(f))
