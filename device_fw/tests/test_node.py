import math

import bluetooth
import esp32
import machine

import harness
from manhole import bthome


def tilted(deg):
    r = deg * math.pi / 180
    return (math.sin(r), 0.0, math.cos(r))


def counter_of(adv):
    # adv: len 0x16 d2 fc info ... counter(4) mic(4) [name]
    sdata = adv[4 : 1 + adv[0]]
    return int.from_bytes(sdata[-8:-4], "little")


def test_heartbeat_when_all_is_well():
    cfg = harness.make_config()
    n, sleep_ms = harness.boot(cfg)
    assert sleep_ms == 300000, sleep_ms
    advs = harness.adverts()
    assert len(advs) == 1 and len(advs[0]) <= 31
    assert advs[0][1] == 0x16 and advs[0][2:4] == b"\xd2\xfc"
    assert advs[0][4] == 0x41  # v2, encrypted, not trigger-based
    # heartbeat: slow advertising interval, not connectable
    starts = [a for a in bluetooth.ADVERTS if a[2] is not None]
    assert starts[0][1] == 200000 and starts[0][3] is False
    assert machine.SIM.deep_sleeps == [300000]
    assert esp32.WAKE and esp32.WAKE[0][1] == esp32.WAKEUP_ANY_HIGH


def test_tilt_held_2s_raises_alarm_and_fast_burst():
    cfg = harness.make_config()
    machine.SIM.accel = tilted(30)
    n, sleep_ms = harness.boot(cfg)
    assert n.tilt.active
    assert sleep_ms == 10000
    starts = [a for a in bluetooth.ADVERTS if a[2] is not None]
    assert starts[0][1] == 50000  # fast burst
    # the node sampled for the hold time before deciding
    assert n.adverts[0][2] == 3000


def test_passing_vehicle_does_not_raise():
    import time

    cfg = harness.make_config()
    now = time.ticks_ms()
    # rocked to 25 deg for 800 ms, then back level
    machine.SIM.accel_script = [(now + 800, tilted(25))]
    machine.SIM.accel = tilted(1)
    n, sleep_ms = harness.boot(cfg)
    assert not n.tilt.active
    assert sleep_ms == 300000


def test_beyond_90_always_alarms_even_with_high_threshold():
    cfg = harness.make_config(tilt_threshold_deg=90.0, tilt_clear_deg=80.0)
    machine.SIM.accel = tilted(120)
    n, _ = harness.boot(cfg)
    assert n.tilt.active


def test_alarm_survives_deep_sleep_and_clears():
    cfg = harness.make_config()
    machine.SIM.accel = tilted(30)
    n1, _ = harness.boot(cfg)
    assert n1.tilt.active
    n2, s2 = harness.boot(cfg)  # still tilted: stays raised, fast re-report
    assert n2.tilt.active and s2 == 10000
    machine.SIM.accel = tilted(2)
    n3, s3 = harness.boot(cfg)  # closed again: clears after the hold
    assert not n3.tilt.active
    assert n3.adverts[0][1] == 50  # the clearing is a change: fast burst
    n4, s4 = harness.boot(cfg)
    assert s4 == 300000 and n4.adverts[0][1] == 200


def test_high_water_and_tamper_raise_at_once():
    cfg = harness.make_config()
    machine.SIM.adc_uv[34] = 600000  # 0.6 V -> 600 mm
    n, s = harness.boot(cfg)
    assert n.water.active and s == 10000
    machine.SIM.adc_uv[34] = 100000
    machine.SIM.pins[27] = 1  # housing opened
    n, s = harness.boot(cfg)
    assert not n.water.active and s == 10000


def test_counter_increases_across_deep_sleep_and_power_loss():
    cfg = harness.make_config(counter_block=4)
    seen = []
    for i in range(10):
        if i in (3, 7):
            harness.power_loss()
        harness.boot(cfg)
        seen += [counter_of(a) for a in harness.adverts()]
    assert all(b > a for a, b in zip(seen, seen[1:])), seen
    assert len(set(seen)) == len(seen)


def test_gas_replaces_voltage_and_fits():
    cfg = harness.make_config(gas=True, name="")
    machine.SIM.pins[25] = 1
    n, s = harness.boot(cfg)
    adv = harness.adverts()[0]
    assert len(adv) <= 31
    assert s == 10000  # gas is an alarm


def test_missing_accelerometer_is_a_clear_error():
    machine.SIM.accel_present = False
    try:
        harness.boot(harness.make_config())
    except OSError:
        return
    raise AssertionError("booted without an accelerometer")


def test_config_errors_are_clear():
    from manhole import config

    for bad, word in (({"key": "abc"}, "key"), ({"key": harness.KEY, "tilt_threshold_deg": 0.1}, "tilt"),
                      ({"key": harness.KEY, "bogus": 1}, "bogus")):
        try:
            config.validate(bad)
        except config.ConfigError as e:
            assert word in str(e), str(e)
            continue
        raise AssertionError("accepted %r" % bad)


def test_objects_encode_saturating():
    assert bthome.encode_object(bthome.ROTATION, 4000.0) == b"\x3f\xff\x7f"
    assert bthome.encode_object(bthome.DISTANCE_MM, -5) == b"\x40\x00\x00"


def test_hardware_setup_accelerometer_wake_and_adc_range():
    harness.boot(harness.make_config(motion_wake_mg=320))
    writes = dict(machine.SIM.i2c_writes)
    assert writes[0x20] == b"\x57" and writes[0x23] == b"\x08"  # 100 Hz, high resolution
    assert writes[0x22] == b"\x40" and writes[0x30] == b"\x2a"  # INT1 on motion, any axis
    assert writes[0x32] == bytes([20])  # 320 mg / 16 mg per step
    assert machine.SIM.adc_atten == {35: machine.ADC.ATTN_11DB, 34: machine.ADC.ATTN_11DB}
    assert esp32.WAKE[-1][0] == (26, 27)  # accelerometer INT1 and tamper wake the node


def test_sensor_dropping_out_mid_hold_does_not_keep_the_node_awake():
    import time

    cfg = harness.make_config()
    start = time.ticks_ms()
    machine.SIM.accel_script = [(start + 400, tilted(30))]
    machine.SIM.accel = (0.0, 0.0, 0.0)  # then no gravity at all: a dead sensor
    n, sleep_ms = harness.boot(cfg)
    assert not n.tilt.active
    # bounded sampling: the hold's limit, two more looks before the sensor is called dead, the burst
    assert time.ticks_ms() - start <= 3 * 2000 + 200 + 2 * 200 + 3000 + sleep_ms
    assert harness.objects(harness.adverts()[0])[bthome.PROBLEM] == 1  # said, not a made-up 0 deg
    assert machine.SIM.deep_sleeps == [sleep_ms]


def test_switch_held_high_sleeps_on_the_alarm_timer_not_woken_at_once():
    # EXT1 wake-up is level-triggered: a tamper switch (or gas) already high when the chip sleeps
    # would wake it at once, over and over. It is left out of the wake pins while high; the
    # alarm_interval_s timer re-reports it and sees it clear.
    cfg = harness.make_config(gas=True)
    machine.SIM.pins[27] = 1  # housing left open
    machine.SIM.pins[25] = 1  # gas present
    for _ in range(3):
        n, sleep_ms = harness.boot(cfg)
        assert sleep_ms == 10000 and len(n.adverts) == 1
        assert esp32.WAKE[-1] == ((26,), esp32.WAKEUP_ANY_HIGH)  # only the accelerometer's INT1
    assert machine.SIM.asleep_ms == [10000, 10000, 10000], machine.SIM.asleep_ms
    machine.SIM.pins[25] = 0  # gas gone: it wakes the node again; the open housing still does not
    harness.boot(cfg)
    assert esp32.WAKE[-1][0] == (26, 25) and machine.SIM.asleep_ms[-1] == 10000
    machine.SIM.pins[27] = 0  # housing closed: the timer wake sees the alarm clear
    n, sleep_ms = harness.boot(cfg)
    assert n.adverts[0][1] == 50 and sleep_ms == 300000  # the change: a fast burst
    assert esp32.WAKE[-1][0] == (26, 27, 25)
    assert machine.SIM.asleep_ms[-1] == 300000


def test_switch_going_high_after_the_reading_is_sent_within_the_alarm_interval():
    # Tamper read closed, opened while the heartbeat adverts went out: not a wake pin any more
    # (it is high), so the sleep is cut from the heartbeat to alarm_interval_s.
    from manhole import hal

    hw = hal.Hardware(harness.make_config())
    machine.SIM.pins[27] = 1
    try:
        hw.deep_sleep(300000)
    except machine.DeepSleep as e:
        assert e.ms == 10000 and e.asleep_ms == 10000, (e.ms, e.asleep_ms)
    else:
        raise AssertionError("did not sleep")
    assert esp32.WAKE[-1][0] == (26,)


def test_a_name_that_does_not_fit_the_advert_is_a_config_error():
    # The cover's advert is 30 of 31 bytes (29 with gas): a name's AD structure (2 bytes + the
    # name) does not fit, so any name is refused at config time, not by every wake.
    from manhole import config

    for gas in (False, True):
        cfg = harness.make_config(gas=gas, name="")
        harness.boot(cfg)
        assert len(harness.adverts()[0]) + 2 + 1 > 31  # not even one character fits
        try:
            harness.make_config(gas=gas, name="m")
        except config.ConfigError as e:
            assert "name" in str(e), str(e)
        else:
            raise AssertionError("a name the advert has no room for accepted")
