"""Clock-sync awareness: the kernel's NTP status is readable, config overrides it, a sync arriving is
remembered with its monotonic time, and events stamped before carry what corrects them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from citynerve.gateway.api import Event, EventState, Reading, Severity, SteadyWall
from citynerve.gateway.store import Lane, OutboxRow
from citynerve.gateway.timesync import ClockSync, UnsyncedMarks, kernel_synced, timesyncd_synced
from tests.clock.clocks import SteppedClock


class PlayedSync(ClockSync):
    """The real tracker with its sources replaced by a switch (a sync arriving is played)."""

    state: bool | None = False

    def read(self) -> tuple[bool | None, str]:
        return self.state, "test"


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readings: list[Reading] = []

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def put_event(self, event: Event) -> None:
        self.events.append(event)


def test_kernel_status_is_read_without_privileges() -> None:
    assert kernel_synced() in (True, False)  # adjtimex(2) read-only works unprivileged


def test_config_modes_and_timesyncd_flag(tmp_path: Path) -> None:
    assert ClockSync("synced").synced is True and ClockSync("synced").source == "config"
    assert ClockSync("unsynced").unsynced
    assert ClockSync("kernel").synced == kernel_synced()
    assert timesyncd_synced(tmp_path / "none" / "synchronized") is None  # timesyncd not running
    (tmp_path / "ts").mkdir()
    assert timesyncd_synced(tmp_path / "ts" / "synchronized") is False
    (tmp_path / "ts" / "synchronized").touch()
    assert timesyncd_synced(tmp_path / "ts" / "synchronized") is True


def test_sync_arrival_is_remembered_and_events_before_it_are_correctable() -> None:
    clock = SteppedClock(wall=1_700_000_000.0)  # a Pi without RTC: boots with a stale time
    sync = PlayedSync("auto", clock)
    sink = Collect()
    marks = UnsyncedMarks(sink, sync)
    assert sync.unsynced and sync.to_dict()["state"] == "unsynchronized"
    clock.advance(30)
    stamped = clock.wall()
    marks.put_event(Event("sd-1", "smoke", EventState.RAISED, Severity.CRITICAL, stamped))
    marks.put_readings([Reading("sd-1", "smoke_alarm", True, "", stamped)])
    clock.advance(60)
    clock.step(86_400 * 40)  # NTP steps the clock 40 days forward
    sync.state = True
    assert sync.check() and sync.synced and sync.sync_point is not None
    (ev,) = sink.events
    assert ev.attrs["clock_unsynced"] is True and ev.attrs["boot_id"] == sync.boot_id
    wire = sync.wire()
    corrected = wire["sync_wall"] - (wire["sync_mono"] - ev.attrs["capture_mono"])
    assert abs(corrected - (stamped + 86_400 * 40)) < 0.01  # the time it really was
    assert marks.marked_events == 1 and marks.unsynced_readings == 1
    marks.put_event(Event("sd-1", "smoke", EventState.CLEARED, Severity.CRITICAL, clock.wall()))
    assert "clock_unsynced" not in sink.events[-1].attrs
    # Still in the outbox when the sync came: sent with the corrected time, the original kept.
    row = sync.restamp(OutboxRow(7, Lane.EVENT, ev.ts, ev))
    assert isinstance(row.record, Event) and row.record.id == ev.id
    assert abs(row.ts - (stamped + 86_400 * 40)) < 0.01 and row.record.ts == row.ts
    assert row.record.attrs["ts_corrected"] is True and row.record.attrs["ts_unsynced"] == stamped
    later = OutboxRow(8, Lane.EVENT, sink.events[-1].ts, sink.events[-1])
    assert sync.restamp(later) is later  # stamped after the sync: as it is
    other_boot = Event("sd-1", "smoke", EventState.RAISED, Severity.CRITICAL, stamped, attrs={**ev.attrs})
    other_boot.attrs["boot_id"] = "another-boot"
    assert sync.restamp(OutboxRow(9, Lane.EVENT, stamped, other_boot)).ts == stamped  # cannot be corrected


def test_steady_wall_reports_each_step_once() -> None:
    clock = SteppedClock()
    steady = SteadyWall(clock)
    t0, step = steady.now()
    assert step == 0.0 and t0 == clock.wall()
    clock.advance(10)
    clock.step(-3600)
    t1, step = steady.now()
    assert step == -3600 and t1 == clock.wall()
    clock.advance(0.4)
    clock.step(0.5)  # slewing-sized: not a step
    assert steady.now()[1] == 0.0 and steady.steps == 1


def test_metrics_show_the_clock() -> None:
    from citynerve.gateway.web.metrics import render_metrics

    text = render_metrics({"gateway_id": "gw", "clock": {"synchronized": False, "wall_steps": 2}})
    assert "citynerve_clock_synchronized 0" in text
    assert "citynerve_clock_steps_total 2" in text
    unknown = render_metrics({"gateway_id": "gw", "clock": {"synchronized": None}})
    assert not any(line.startswith("citynerve_clock_synchronized ") for line in unknown.splitlines())


def test_readings_stamped_before_the_sync_are_marked_one_by_one_and_reach_the_wire(tmp_path: Path) -> None:
    """Issue 12: each reading stamped while unsynchronised carries its monotonic capture time and
    boot id through the outbox to the JSON v1 message, so the platform can correct it."""
    import json

    from citynerve.gateway.store import Outbox
    from citynerve.gateway.uplink import JsonV1Encoding, load_schema
    from tests.uplink.conftest import validate_message

    clock = SteppedClock(wall=1_700_000_000.0)
    sync = PlayedSync("auto", clock)
    sink = Collect()
    marks = UnsyncedMarks(sink, sync)
    clock.advance(30)
    stamped = clock.wall()
    marks.put_readings([Reading("wm-1", "flow", 1.5, "m3/h", stamped)])
    clock.advance(60)
    clock.step(86_400 * 40)
    sync.state = True
    assert sync.check()
    marks.put_readings([Reading("wm-1", "flow", 1.6, "m3/h", clock.wall())])  # synced: no mark
    with Outbox(tmp_path / "o.db") as ob:
        ob.append(sink.readings, [])
        blocks = ob.peek_telemetry_blocks()
    enc = JsonV1Encoding(topic_prefix="citynerve", gateway_id="gw")
    (batch,) = enc.telemetry(blocks, prev_seq=0, max_rows=200, max_bytes=65536)
    assert batch.message is not None
    body = json.loads(batch.message.payload)
    validate_message("telemetry", body)
    first, second = body["readings"]
    assert first["clock_unsynced"] is True and first["boot_id"] == sync.boot_id
    wire = sync.wire()
    corrected = wire["sync_wall"] - (wire["sync_mono"] - first["capture_mono"])
    assert abs(corrected - (stamped + 86_400 * 40)) < 0.01
    assert "clock_unsynced" not in second
    assert load_schema("telemetry")  # the keys are in the schema (validated above)
