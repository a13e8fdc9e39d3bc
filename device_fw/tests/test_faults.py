# A sensor that gives no reading, and settings that would make a node useless or crash it every
# wake: the node must say "sensor fault" (BTHome 0x26 problem) instead of a healthy-looking reading,
# and the config loader must refuse the setting, naming it and its allowed range.

import machine

import harness
from bedfoot import config as bed_config
from hydrant import config as hy_config
from manhole import bthome, config, errlog

import test_family as family

KEY = harness.KEY
PROBLEM = 0x26


def refused(validate, raw, *words):
    try:
        validate(raw)
    except config.ConfigError as e:
        for w in words:
            assert w in str(e), (w, str(e))
        return str(e)
    raise AssertionError("accepted %r" % (raw,))


def error_log():
    try:
        with open(errlog.ERROR_LOG) as f:
            return f.read()
    except OSError:
        return ""


def test_dead_accelerometer_is_a_sensor_fault_not_a_closed_cover():
    # A LIS3DH that answers WHO_AM_I but reads 0 g on every axis (dead MEMS, stuck in power-down).
    cfg = harness.make_config()
    machine.SIM.accel = (0.0, 0.0, 0.0)
    n, sleep_ms = harness.boot(cfg)
    objs = harness.objects(harness.adverts()[0])
    assert bthome.ROTATION not in objs, objs  # no "0 deg" the gateway would take for closed
    assert objs[PROBLEM] == 1, objs
    assert n.adverts[0][1] == 50  # the fault is news: a fast burst
    log = error_log()
    assert "accelerometer" in log, log
    for _ in range(5):  # still dead: every advert says so, the log is written once, not each wake
        harness.boot(cfg)
        assert harness.objects(harness.adverts()[0])[PROBLEM] == 1
    assert error_log() == log
    machine.SIM.accel = (0.0, 0.0, 1.0)  # replaced: the rotation is back, the fault is gone
    n, _ = harness.boot(cfg)
    objs = harness.objects(harness.adverts()[0])
    assert PROBLEM not in objs and objs[bthome.ROTATION] == 0, objs
    assert n.adverts[0][1] == 50  # the end of the fault is news too


def test_a_lifted_cover_whose_sensor_then_dies_stays_open():
    cfg = harness.make_config()
    machine.SIM.accel = (0.5, 0.0, 0.866)  # 30 deg
    n, _ = harness.boot(cfg)
    assert n.tilt.active
    machine.SIM.accel = (0.0, 0.0, 0.0)
    n, s = harness.boot(cfg)
    objs = harness.objects(harness.adverts()[0])
    assert n.tilt.active and objs[bthome.OPENING] == 1 and objs[PROBLEM] == 1, objs
    assert s == 10000


def test_a_momentary_free_fall_is_not_a_fault():
    import time

    cfg = harness.make_config()
    machine.SIM.accel_script = [(time.ticks_ms() + 100, (0.0, 0.0, 0.0))]  # one sample in free fall
    harness.boot(cfg)
    objs = harness.objects(harness.adverts()[0])
    assert PROBLEM not in objs and objs[bthome.ROTATION] == 0, objs


def test_hydrant_dead_accelerometer_is_a_sensor_fault():
    cfg = hy_config.validate({"key": KEY})
    machine.SIM.adc_uv[34] = 650000
    machine.SIM.accel = (0.0, 0.0, 0.0)
    n, _ = family.boot_hydrant(cfg)
    objs = harness.objects(n.adverts[0][0])
    assert bthome.ROTATION not in objs and objs[PROBLEM] == 1, objs
    assert "accelerometer" in error_log()


def test_bed_strip_shorted_is_a_sensor_fault_not_in_bed():
    # A strip crushed flat or its wire shorted to the supply reads the ADC's top: "in bed" for ever
    # would hide a fall at night. It is a fault, and the occupancy is left out.
    cfg = bed_config.validate({"key": KEY})
    machine.SIM.adc_uv[family.LOAD_PIN] = 3300000
    n, _ = family.boot_bed(cfg)
    objs = harness.objects(n.adverts[0][0])
    assert bthome.OCCUPANCY not in objs and objs[PROBLEM] == 1, objs
    assert "strip" in error_log()
    machine.SIM.adc_uv[family.LOAD_PIN] = 2000000  # mended, someone in bed
    n, _ = family.boot_bed(cfg)
    objs = harness.objects(n.adverts[0][0])
    assert objs[bthome.OCCUPANCY] == 1 and PROBLEM not in objs, objs


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
