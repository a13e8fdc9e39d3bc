from manhole.alarm import HoldAlarm


def test_raises_only_after_hold():
    a = HoldAlarm(10.0, 7.0, 2000)
    assert not a.update(15.0, 0)
    assert a.pending()
    assert not a.update(15.0, 1999)
    assert not a.active
    assert a.update(15.0, 2000)
    assert a.active and not a.pending()


def test_short_rocking_does_not_raise():
    a = HoldAlarm(10.0, 7.0, 2000)
    a.update(20.0, 0)
    a.update(20.0, 1500)
    a.update(3.0, 1800)  # back down before 2 s: a passing vehicle
    assert not a.pending()
    a.update(20.0, 1900)
    assert not a.update(20.0, 3800)  # the hold restarted at 1900
    assert a.update(20.0, 3900)


def test_clear_needs_hold_below_clear_level():
    a = HoldAlarm(10.0, 7.0, 2000, active=True)
    assert not a.update(8.0, 0)  # between clear and raise levels: stays raised
    assert not a.pending()
    a.update(5.0, 100)
    assert not a.update(5.0, 2099)
    assert a.update(5.0, 2100)
    assert not a.active


def test_zero_hold_is_immediate():
    a = HoldAlarm(500, 450, 0)
    assert a.update(600, 0) and a.active
    assert not a.update(480, 1)
    assert a.update(400, 2) and not a.active


def test_none_sample_is_ignored():
    a = HoldAlarm(10.0, 7.0, 2000)
    a.update(20.0, 0)
    assert not a.update(None, 2500)
    assert a.pending()


def test_clear_above_raise_is_refused():
    try:
        HoldAlarm(10.0, 12.0, 0)
    except ValueError:
        return
    raise AssertionError("accepted clear level above raise level")
