# The bed-foot and hydrant builds of the node family, on the host stand-ins under MicroPython.

import bluetooth
import machine
import time

from bedfoot import config as bed_config
from bedfoot import hal as bed_hal
from bedfoot import node as bed_node
from hydrant import config as hy_config
from hydrant import hal as hy_hal
from hydrant import node as hy_node
from manhole import bthome

KEY = "231d39c1d7cc1ab1aee224cd096db932"
LOAD_PIN = 34


def boot_bed(cfg):
    del bluetooth.ADVERTS[:]
    hw = bed_hal.Hardware(cfg)
    n = bed_node.BedNode(hw, cfg)
    sleep_ms = n.wake()
    try:
        hw.deep_sleep(sleep_ms)
    except machine.DeepSleep as e:
        machine.SIM.reset_cause = machine.DEEPSLEEP_RESET
        time.advance(e.asleep_ms)  # the timer, or 0: an EXT1 pin already high woke it at once
    return n, sleep_ms


def boot_hydrant(cfg):
    del bluetooth.ADVERTS[:]
    hw = hy_hal.Hardware(cfg)
    n = hy_node.HydrantNode(hw, cfg)
    sleep_ms = n.wake()
    try:
        hw.deep_sleep(sleep_ms)
    except machine.DeepSleep as e:
        machine.SIM.reset_cause = machine.DEEPSLEEP_RESET
        time.advance(e.asleep_ms)  # the timer, or 0: an EXT1 pin already high woke it at once
    return n, sleep_ms


def test_bed_first_look_sends_at_once_then_quiet_until_heartbeat():
    cfg = bed_config.validate({"key": KEY})
    machine.SIM.adc_uv[LOAD_PIN] = 2000000  # someone lies on the bed
    n, sleep_ms = boot_bed(cfg)
    assert n.in_bed is True and sleep_ms == 5000
    assert len(n.adverts) == 1 and n.adverts[0][1] == 50  # a change: fast burst
    sent = 1
    for _ in range(130):  # 650 s of quiet looks: one heartbeat in between
        n, _ = boot_bed(cfg)
        sent += len(n.adverts)
    assert sent == 2, sent


def test_bed_debounce_ignores_turning_over_and_sends_getting_up():
    cfg = bed_config.validate({"key": KEY})
    machine.SIM.adc_uv[LOAD_PIN] = 2000000
    boot_bed(cfg)
    machine.SIM.adc_uv[LOAD_PIN] = 300000  # weight off for 10 s (two looks): turning over
    for _ in range(2):
        n, _ = boot_bed(cfg)
        assert n.in_bed is True and not n.adverts
    machine.SIM.adc_uv[LOAD_PIN] = 2000000
    boot_bed(cfg)
    machine.SIM.adc_uv[LOAD_PIN] = 300000  # out of bed for good
    changes = []
    for i in range(6):
        n, _ = boot_bed(cfg)
        if n.adverts:
            changes.append(i)
    assert changes == [4] and n.in_bed is False  # seen at 0, 5, 10, 15, 20 s: sent at 20 s


def test_bed_between_thresholds_keeps_its_state():
    cfg = bed_config.validate({"key": KEY})
    machine.SIM.adc_uv[LOAD_PIN] = 2000000
    boot_bed(cfg)
    machine.SIM.adc_uv[LOAD_PIN] = 1000000  # 1.0 V: between empty (0.8) and occupied (1.2)
    for _ in range(10):
        n, _ = boot_bed(cfg)
        assert n.in_bed is True


def test_bed_config_checks():
    try:
        bed_config.validate({"key": KEY, "empty_v": 2.0, "occupied_v": 1.0})
    except bed_config.ConfigError:
        pass
    else:
        raise AssertionError("empty_v above occupied_v accepted")
    try:
        bed_config.validate({"key": KEY, "tilt_hold_ms": 5})
    except bed_config.ConfigError:
        pass
    else:
        raise AssertionError("a manhole setting accepted by the bed-foot build")


def test_hydrant_sends_pressure_changes_and_heartbeat():
    cfg = hy_config.validate({"key": KEY})
    machine.SIM.adc_uv[34] = 650000  # (0.65 - 0.25) * 0.8 = 0.32 MPa
    n, sleep_ms = boot_hydrant(cfg)
    assert sleep_ms == 10000 and len(n.adverts) == 1  # first sample: sent at once
    assert abs(n.last_p - 0.32) < 1e-6
    n, _ = boot_hydrant(cfg)
    assert not n.adverts  # unchanged: quiet
    machine.SIM.adc_uv[34] = 600000  # 0.28 MPa: a drop above the 0.01 MPa step
    n, _ = boot_hydrant(cfg)
    assert len(n.adverts) == 1 and n.adverts[0][1] == 50
    quiet = 0
    for _ in range(35):
        n, _ = boot_hydrant(cfg)
        quiet += len(n.adverts)
    assert quiet == 1  # one heartbeat in 350 s


def test_hydrant_outlet_and_knock_are_alarms():
    cfg = hy_config.validate({"key": KEY})
    machine.SIM.adc_uv[34] = 650000
    boot_hydrant(cfg)
    machine.SIM.pins[14] = 1  # outlet opened
    n, sleep_ms = boot_hydrant(cfg)
    assert sleep_ms == 10000 and len(n.adverts) == 1 and n.adverts[0][1] == 50
    machine.SIM.pins[14] = 0
    machine.SIM.accel = (0.5, 0.0, 0.866)  # knocked to 30 deg and lying there
    n, _ = boot_hydrant(cfg)
    assert n.tilt.active and len(n.adverts) == 1


def test_pressure_object_is_three_bytes():
    enc = bthome.encode_object(bthome.PRESSURE, 3200.0)  # 0.32 MPa in hPa
    assert enc == bytes([0x04]) + (320000).to_bytes(3, "little"), enc
    assert bthome.encode_object(bthome.OCCUPANCY, True) == b"\x23\x01"


def test_hydrant_outlet_open_for_hours_sleeps_on_the_alarm_timer():
    # The outlet switch held high (hydrant in use) must not keep waking the chip at once (EXT1 is
    # level-triggered): the node re-reports every alarm_interval_s and sees the outlet shut.
    import esp32

    cfg = hy_config.validate({"key": KEY})
    machine.SIM.adc_uv[34] = 650000
    machine.SIM.pins[14] = 1
    for _ in range(3):
        n, sleep_ms = boot_hydrant(cfg)
        assert sleep_ms == 10000 and len(n.adverts) == 1
        assert esp32.WAKE[-1][0] == (26, 27)  # the accelerometer and the tamper switch
    assert machine.SIM.asleep_ms == [10000, 10000, 10000], machine.SIM.asleep_ms
    machine.SIM.pins[14] = 0
    n, _ = boot_hydrant(cfg)
    assert len(n.adverts) == 1 and n.adverts[0][1] == 50  # shut: sent at once
    assert esp32.WAKE[-1][0] == (26, 27, 14)


def test_names_up_to_the_advert_room_fit_longer_ones_are_config_errors():
    # The longest name each build accepts fills the 31-byte advert exactly; one byte more is
    # refused at config time (it would make every wake fail).
    for validate, boot, room in ((bed_config.validate, boot_bed, 9), (hy_config.validate, boot_hydrant, 3)):
        machine.SIM.reset()
        n, _ = boot(validate({"key": KEY, "name": "n" * room}))
        assert len(n.adverts[0][0]) == 31, (room, len(n.adverts[0][0]))
        try:
            validate({"key": KEY, "name": "n" * (room + 1)})
        except bed_config.ConfigError as e:
            assert "name" in str(e), str(e)
        else:
            raise AssertionError("a name past the advert's room accepted")
