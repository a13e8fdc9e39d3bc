"""The verdict's named patterns, from counted outcomes (pure logic; owner and peers are tested elsewhere)."""

from __future__ import annotations

from citynerve.gateway.api import DeviceExceptionError, DeviceTimeoutError, FrameError, FrameFault
from citynerve.gateway.bus.verdict import (
    Cause,
    Counts,
    DeviceFacts,
    DeviceState,
    FailureKind,
    LineQuality,
    RadioFacts,
    judge_bus,
    kind_of,
)

SETTINGS = "/dev/ttyUSB0 9600 8N1"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def counts(ok: int = 0, **failed: int) -> Counts:
    return Counts(ok + sum(failed.values()), sum(failed.values()), failed)


def facts(dev: str, c: Counts, online: bool | None = True, **kw: object) -> DeviceFacts:
    return DeviceFacts(dev, f"address {dev[-1]}", online, c, **kw)  # type: ignore[arg-type]


def test_kind_of_reads_typed_attributes_not_messages() -> None:
    assert kind_of(FrameError("x", "whatever", fault=FrameFault.CHECKSUM)) is FailureKind.CHECKSUM
    assert kind_of(FrameError("x", "checksum mismatch")) is FailureKind.FRAMING
    assert kind_of(FrameError("x", "r", fault=FrameFault.ADDRESS)) is FailureKind.ADDRESS
    assert kind_of(FrameError("x", "r", fault=FrameFault.DECRYPT)) is FailureKind.DECRYPT
    assert kind_of(DeviceTimeoutError("d")) is FailureKind.TIMEOUT
    assert kind_of(DeviceExceptionError("d", 2, "illegal address")) is FailureKind.EXCEPTION


def test_window_slides_on_the_monotonic_clock_and_keeps_the_denominator() -> None:
    clock = Clock()
    q = LineQuality(window_s=60, min_keep=0, clock=clock)
    for i in range(10):
        q.record("m1", FailureKind.TIMEOUT if i % 3 == 0 else None)
    c = q.counts("m1")
    assert (c.attempts, c.failures, dict(c.by_kind)) == (10, 4, {"timeout": 4})
    assert c.describe() == "4 of 10 transactions failed (40%) in the last 60 s: 4 timeout"
    clock.t += 61
    q.record("m1", None)
    assert q.counts("m1").attempts == 1
    assert q.counts("nobody").describe() == "no transactions in the last 60 s"


def test_a_slowly_polled_device_keeps_its_last_attempts_as_denominator() -> None:
    clock = Clock()
    q = LineQuality(window_s=300, min_keep=10, clock=clock)
    for i in range(20):  # one poll a minute, every third one lost
        q.record("m1", FailureKind.TIMEOUT if i % 3 == 0 else None)
        clock.t += 60
    c = q.counts("m1")
    assert c.attempts == 10 and c.failures == 3 and c.window_s == 600
    assert c.describe().startswith("3 of 10 transactions failed (30%) in the last 600 s")
    clock.t += 3600  # nothing for an hour: the old attempts say nothing any more
    assert q.counts("m1").attempts == 0


def test_all_devices_silent_names_the_line_and_shows_its_settings() -> None:
    devs = {d: facts(d, counts(timeout=12), online=False) for d in ("m1", "m2", "m3")}
    v = judge_bus(devs, settings=SETTINGS)
    assert v.cause is Cause.LINE_SILENT and v.state is DeviceState.OFFLINE
    assert "configured /dev/ttyUSB0 9600 8N1" in v.reason and "36 requests" in v.reason
    assert all(d.cause is Cause.LINE_SILENT for d in v.devices.values())


def test_all_silent_behind_a_network_endpoint_names_the_converter() -> None:
    devs = {d: facts(d, counts(timeout=5), online=False) for d in ("m1", "m2")}
    v = judge_bus(devs, settings="10.0.0.5:502", serial=False)
    assert v.cause is Cause.LINE_SILENT and "no device behind 10.0.0.5:502 answers" in v.reason
    assert "baud" not in v.reason


def test_all_garbled_is_line_quality() -> None:
    devs = {
        "m1": facts("m1", counts(ok=6, checksum=4)),
        "m2": facts("m2", counts(ok=5, framing=3, timeout=2)),
    }
    v = judge_bus(devs, settings=SETTINGS)
    assert v.cause is Cause.LINE_GARBLED
    assert "termination" in v.reason and "earthing" in v.reason
    assert {d.state for d in v.devices.values()} == {DeviceState.DEGRADED}


def test_one_address_garbled_while_others_clean_is_a_duplicate_address() -> None:
    devs = {
        "m1": facts("m1", counts(ok=20)),
        "m2": facts("m2", counts(ok=3, checksum=7)),
        "m3": facts("m3", counts(ok=19, timeout=1)),
    }
    v = judge_bus(devs, settings=SETTINGS)
    m2 = v.devices["m2"]
    assert m2.cause is Cause.DUPLICATE_ADDRESS and m2.state is DeviceState.DEGRADED
    assert "two devices probably answer on address 2" in m2.reason
    assert "7 of 10 transactions failed (70%)" in m2.reason
    assert v.devices["m1"].cause is Cause.OK and v.devices["m1"].state is DeviceState.ONLINE
    assert v.cause is Cause.DUPLICATE_ADDRESS


def test_one_silent_while_others_answer_points_at_that_device() -> None:
    devs = {
        "m1": facts("m1", counts(ok=20)),
        "m2": facts("m2", counts(timeout=9), online=False),
    }
    v = judge_bus(devs, settings=SETTINGS)
    assert v.devices["m2"].cause is Cause.DEVICE_SILENT
    assert "address (configured address 2), its power and its stub" in v.devices["m2"].reason
    assert v.devices["m2"].state is DeviceState.OFFLINE


def test_a_device_that_just_went_offline_is_named_by_its_last_failures() -> None:
    # two good polls, then silence: offline after one failure (offline_after = 1)
    c = Counts(3, 1, {"timeout": 1}, trailing={"timeout": 1})
    v = judge_bus({"m1": facts("m1", counts(ok=20)), "m2": facts("m2", c, online=False)}, settings=SETTINGS)
    assert v.devices["m2"].cause is Cause.DEVICE_SILENT and "its power" in v.devices["m2"].reason


def test_intermittent_device_is_degraded_with_rate_and_denominator() -> None:
    devs = {"m1": facts("m1", counts(ok=28, timeout=12)), "m2": facts("m2", counts(ok=40))}
    v = judge_bus(devs, settings=SETTINGS)
    d = v.devices["m1"]
    assert d.cause is Cause.INTERMITTENT and d.state is DeviceState.DEGRADED
    assert "12 of 40 transactions failed (30%)" in d.reason


def test_rare_failures_stay_online() -> None:
    v = judge_bus({"m1": facts("m1", counts(ok=49, timeout=1))}, settings=SETTINGS)
    assert v.devices["m1"].state is DeviceState.ONLINE and v.cause is Cause.OK


def test_too_few_attempts_give_no_rate_verdict() -> None:
    v = judge_bus({"m1": facts("m1", counts(timeout=2), online=None)}, settings=SETTINGS)
    assert v.devices["m1"].state is DeviceState.UNKNOWN and v.cause is Cause.OK


def test_values_outside_bounds_name_the_register_map_or_word_order() -> None:
    c = Counts(10, 0, {}, implausible=10)
    v = judge_bus({"m1": facts("m1", c, implausible_points=("voltage_a",))}, settings=SETTINGS)
    d = v.devices["m1"]
    assert d.cause is Cause.IMPLAUSIBLE_VALUES and d.state is DeviceState.DEGRADED
    assert "word order" in d.reason and "voltage_a" in d.reason


def test_replies_from_another_address() -> None:
    v = judge_bus({"m1": facts("m1", counts(ok=1, wrong_address=5))}, settings=SETTINGS)
    assert v.devices["m1"].cause is Cause.WRONG_ADDRESS


def test_channel_down_names_the_channel() -> None:
    v = judge_bus({"m1": facts("m1", counts())}, settings=SETTINGS, channel_error="cannot open /dev/ttyUSB0")
    assert v.cause is Cause.CHANNEL_DOWN and "cannot open /dev/ttyUSB0" in v.devices["m1"].reason


def test_radio_node_heard_but_rejected_names_the_key() -> None:
    radio = RadioFacts(accepted=0, rejected={"wrong_key": 36}, last_error="MIC check failed for AA:BB")
    v = judge_bus({"n1": facts("n1", Counts(), online=False, radio=radio)}, settings="ble")
    d = v.devices["n1"]
    assert d.cause is Cause.WRONG_KEY and d.state is DeviceState.OFFLINE
    assert "36 of 36 failed decryption" in d.reason and "key" in d.reason


def test_radio_node_never_heard_names_range_and_battery() -> None:
    v = judge_bus({"n1": facts("n1", Counts(), online=False, radio=RadioFacts())}, settings="ble")
    assert v.devices["n1"].cause is Cause.NEVER_HEARD
    assert "range" in v.devices["n1"].reason and "battery" in v.devices["n1"].reason


def test_radio_node_heard_and_accepted_is_online_with_rssi() -> None:
    radio = RadioFacts(accepted=10, last_seen=1.0, last_rssi=-70)
    v = judge_bus({"n1": facts("n1", Counts(), online=True, radio=radio)}, settings="ble")
    assert v.devices["n1"].state is DeviceState.ONLINE and "-70 dBm" in v.devices["n1"].reason


def test_radio_node_with_another_key_names_both_places_a_key_comes_from() -> None:
    radio = RadioFacts(accepted=0, rejected={"wrong_key": 4}, last_error="MIC check failed for AA:BB")
    reason = (
        judge_bus({"n1": facts("n1", Counts(), online=False, radio=radio)}, settings="ble")
        .devices["n1"]
        .reason
    )
    assert "device_fw/tools/provision.py" in reason and "n1.key" in reason  # CityNerve's own nodes
    assert "label or app" in reason  # other sensors


def test_radio_node_whose_counter_restarted_names_the_remedy() -> None:
    """A node reflashed (counter from 1, far below the last accepted): refused as replays, never
    let in by itself; the reason says what the technician can do."""
    radio = RadioFacts(
        accepted=1, rejected={"replay": 9}, last_error="counter 3 ... far below it", counter_restarted=True
    )
    d = judge_bus({"n1": facts("n1", Counts(), online=False, radio=radio)}, settings="ble").devices["n1"]
    assert d.cause is Cause.COUNTER_RESTARTED and d.state is DeviceState.OFFLINE
    assert "counter restarted (node reflashed?): provision it anew with a new key" in d.reason
    assert "citynerve diag ble reset-counter n1" in d.reason
    # a replay just below the last counter (a re-ordered or replayed advert): no such advice
    radio = RadioFacts(accepted=1, rejected={"replay": 9}, last_error="counter 99 ...")
    d = judge_bus({"n1": facts("n1", Counts(), online=False, radio=radio)}, settings="ble").devices["n1"]
    assert d.cause is Cause.REJECTED_ADVERTS and "reset-counter" not in d.reason
