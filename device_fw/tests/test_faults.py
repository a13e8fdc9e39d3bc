# A sensor that gives no reading, and settings that would make a node useless or crash it every
# wake: the node must say "sensor fault" (BTHome 0x26 problem) instead of a healthy-looking reading,
# and the config loader must refuse the setting, naming it and its allowed range.

import harness
from bedfoot import config as bed_config
from hydrant import config as hy_config
from manhole import config

KEY = harness.KEY


def refused(validate, raw, *words):
    try:
        validate(raw)
    except config.ConfigError as e:
        for w in words:
            assert w in str(e), (w, str(e))
        return str(e)
    raise AssertionError("accepted %r" % (raw,))


def test_reference_g_must_be_gravity():
    for validate in (config.validate, hy_config.validate):
        for bad in ([0, 0, 0], [0, 0, 0.2], [0, 0, 2.0], [0, 1], "0,0,1", [0, 0, "1"], [0, 0, True]):
            refused(validate, {"key": KEY, "reference_g": bad}, "reference_g")
        msg = refused(validate, {"key": KEY, "reference_g": [0, 0, 0.2]}, "reference_g")
        assert "0.5" in msg and "1.5" in msg, msg
        validate({"key": KEY, "reference_g": [0.05, -0.02, 0.98]})


def test_battery_empty_must_be_below_full():
    for validate in (config.validate, hy_config.validate, bed_config.validate):
        for empty, full in ((3.6, 3.6), (3.6, 3.0)):
            refused(validate, {"key": KEY, "battery_empty_v": empty, "battery_full_v": full},
                    "battery_empty_v", "battery_full_v")


def test_advert_and_burst_settings_are_range_checked():
    cases = (
        ("alarm_burst_ms", 0), ("alarm_burst_ms", -5), ("alarm_burst_ms", 10 ** 7),
        ("alarm_advert_interval_ms", 0), ("alarm_advert_interval_ms", 19), ("alarm_advert_interval_ms", 10241),
        ("heartbeat_advert_interval_ms", 5), ("heartbeat_advert_interval_ms", 20000),
        ("alarm_burst_ms", "3000"), ("battery_divider", 0),
    )
    for validate in (config.validate, hy_config.validate, bed_config.validate):
        for key, value in cases:
            msg = refused(validate, {"key": KEY, key: value}, key)
            assert ".." in msg, msg  # the allowed range is named
        validate({"key": KEY, "alarm_advert_interval_ms": 20, "heartbeat_advert_interval_ms": 10240})


def test_hydrant_pressure_settings_are_range_checked():
    for key, value in (("pressure_zero_v", -1.0), ("pressure_zero_v", 5.0), ("pressure_mpa_per_v", 0.0),
                       ("pressure_mpa_per_v", -0.8), ("pressure_step_mpa", 0), ("pressure_interval_s", 0),
                       ("pressure_zero_v", None)):
        msg = refused(hy_config.validate, {"key": KEY, key: value}, key)
        assert ".." in msg, msg


def test_equal_battery_levels_no_longer_crash_the_wake():
    # What the old loader let through: every wake died with ZeroDivisionError.
    try:
        cfg = harness.make_config(battery_empty_v=3.6, battery_full_v=3.6)
    except config.ConfigError:
        return
    harness.boot(cfg)
