"""Fire panel print stream: GST-style parser, event state (raise once, clear, reset), raw lines,
GB2312 bytes, fuzzing, and the listener over a pty with the panel stream generator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.drivers.firepanel import (
    DRIVER,
    FirePanelBusConfig,
    FirePanelDevice,
    FirePanelDriver,
    PanelParser,
    PanelRecord,
    PanelStream,
    RecordKind,
    parser_for,
    register_parser,
)
from citynerve.drivers.firepanel.gst import EVENT_WORDS
from citynerve.gateway.api import ChannelError, Event, EventState, PermanentError, SampleBatch, Severity
from citynerve.hil.sim.serial import FirePanelStream

# field-protocols.md section 7: 08/12/02 17:24, loop 004 device 004, 首次火警, location, 感烟探测器
GOLDEN = "首次火警  08/12/02 17:24  004回路004号  感烟探测器  一层大厅东侧"
POINTS = {
    "fire": {"field": "fire_alarm"},
    "alarms": {"field": "alarms_active"},
    "faults": {"field": "faults_active"},
    "last": {"field": "last_event"},
    "raw": {"field": "raw"},
}


def panel(**extra: object) -> FirePanelDevice:
    return FirePanelDevice.model_validate(
        {
            "id": "fp-1",
            "bus": "panel-1",
            "profile": "firepanel-gst",
            "address": "GST-01",
            "location": {"address_code": "320508001"},
            "points": POINTS,
            **extra,
        }
    )


def test_golden_record_whole_object() -> None:
    record = parser_for("gst").parse_line(GOLDEN)
    assert record == PanelRecord(
        RecordKind.SMOKE,
        EventState.RAISED,
        Severity.CRITICAL,
        "首次火警",
        "2008-12-02T17:24:00",
        4,
        4,
        "感烟探测器",
        "一层大厅东侧",
        GOLDEN,
    )


@pytest.mark.parametrize(
    ("line", "kind", "state", "loop", "device", "location"),
    [
        (
            "火警 2024-03-05 08:01:02 回路2 地址17 手动报警按钮 三层楼梯间",
            RecordKind.FIRE,
            EventState.RAISED,
            2,
            17,
            "三层楼梯间",
        ),
        (
            "故障 24/03/05 08:01 001-012 感温探测器 地下车库B区",
            RecordKind.PANEL_FAULT,
            EventState.RAISED,
            1,
            12,
            "地下车库B区",
        ),
        (
            "故障恢复 24/03/05 08:05 001-012 感温探测器 地下车库B区",
            RecordKind.PANEL_FAULT,
            EventState.CLEARED,
            1,
            12,
            "地下车库B区",
        ),
        ("主电故障 24/03/05 09:00", RecordKind.MAINS_FAULT, EventState.RAISED, None, None, ""),
        (
            "启动 24/03/05 09:00 L003D021 排烟阀 屋顶",
            RecordKind.LINKAGE_START,
            EventState.RAISED,
            3,
            21,
            "屋顶",
        ),
        ("取消屏蔽 24/03/05 09:00 002回路001号", RecordKind.DISABLED, EventState.CLEARED, 2, 1, ""),
        ("复位 24/03/05 10:00", RecordKind.RESET, EventState.RAISED, None, None, ""),
    ],
)
def test_gst_variants(
    line: str, kind: RecordKind, state: EventState, loop: int | None, device: int | None, location: str
) -> None:
    record = parser_for("gst").parse_line(line)
    assert record is not None
    assert (record.kind, record.state, record.loop, record.device, record.location) == (
        kind,
        state,
        loop,
        device,
        location,
    )


@pytest.mark.parametrize("line", ["", "   ", "系统启动", "GST200 V2.31", "打印机自检完成 ----", "hello"])
def test_unknown_lines_are_not_records(line: str) -> None:
    parser = parser_for("gst")
    assert parser.parse_line(line) is None or parser.parse_line(line).kind is RecordKind.SELF_TEST  # type: ignore[union-attr]


def test_impossible_panel_date_keeps_the_record() -> None:
    record = parser_for("gst").parse_line("火警 24/13/45 25:61 004回路004号 感烟探测器 大厅")
    assert record is not None and record.panel_time is None and record.kind is RecordKind.SMOKE


def test_date_order_option() -> None:
    record = parser_for("gst", date_order="dmy").parse_line("火警 02/12/08 17:24 004回路004号")
    assert record is not None and record.panel_time == "2008-12-02T17:24:00"


def test_unknown_model_is_named() -> None:
    with pytest.raises(KeyError):
        parser_for("acme")
    with pytest.raises(ValueError):
        panel(panel_model="acme")


def events(items: list[Event | SampleBatch]) -> list[tuple[str, EventState, Severity]]:
    return [(e.kind, e.state, e.severity) for e in items if isinstance(e, Event)]


def samples(items: list[Event | SampleBatch]) -> dict[str, object]:
    return {s.point: s.value for b in items if isinstance(b, SampleBatch) for s in b.samples}


def test_stream_raise_once_reset_clears_everything() -> None:
    stream = PanelStream(panel())
    out = stream.feed(GOLDEN.encode("gb2312") + b"\r\n")
    assert events(out) == [("smoke", EventState.RAISED, Severity.CRITICAL)]
    event = next(e for e in out if isinstance(e, Event))
    assert event.device_id == "fp-1" and event.attrs["location_text"] == "一层大厅东侧"
    assert (
        event.attrs["loop"] == 4
        and event.attrs["device_type"] == "感烟探测器"
        and event.attrs["panel"] == "GST-01"
    )
    assert samples(out) == {"fire": True, "alarms": 1, "faults": 0, "last": "首次火警"}
    assert (
        events(
            stream.feed("火警  08/12/02 17:25  004回路004号  感烟探测器  一层大厅东侧\r\n".encode("gb2312"))
        )
        == []
    )
    out = stream.feed("故障 08/12/02 17:26 001-012 手动报警按钮 二层\n".encode("gb2312"))
    assert events(out) == [("panel_fault", EventState.RAISED, Severity.MAJOR)] and samples(out)["faults"] == 1
    out = stream.feed("复位 08/12/02 17:40\r\n".encode("gb2312"))
    assert events(out) == [
        ("smoke", EventState.CLEARED, Severity.INFO),
        ("panel_fault", EventState.CLEARED, Severity.INFO),
        ("panel_reset", EventState.RAISED, Severity.INFO),
    ]
    assert samples(out) == {"fire": False, "alarms": 0, "faults": 0, "last": "复位"}


def test_stream_fault_cleared_and_raw_lines() -> None:
    stream = PanelStream(panel())
    stream.feed("故障 24/03/05 08:01 001-012 感温探测器 车库\r\n".encode("gb2312"))
    out = stream.feed("故障恢复 24/03/05 08:05 001-012 感温探测器 车库\r\n".encode("gb2312"))
    assert events(out) == [("panel_fault", EventState.CLEARED, Severity.INFO)] and samples(out)["faults"] == 0
    out = stream.feed("GST200 V2.31\r\n".encode("gb2312"))
    assert events(out) == [] and samples(out) == {"raw": "GST200 V2.31"}
    assert stream.state.raw_lines == 1 and stream.state.records == 2


def test_split_lines_and_idle_flush() -> None:
    stream = PanelStream(panel())
    data = GOLDEN.encode("gb2312")
    assert stream.feed(data[:7]) == []
    assert stream.feed(data[7:]) == []  # no line end yet
    assert events(stream.flush()) == [("smoke", EventState.RAISED, Severity.CRITICAL)]


def test_parser_plugin_bug_does_not_stop_the_stream() -> None:
    @register_parser("broken-test")
    class Broken(PanelParser):
        def parse_line(self, line: str) -> PanelRecord | None:
            raise RuntimeError("plugin bug")

    stream = PanelStream(panel(panel_model="broken-test"))
    out = stream.feed(b"anything\r\n")
    assert samples(out) == {"raw": "anything"} and stream.state.parser_errors == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    stream = PanelStream(panel())
    stream.feed(data)
    stream.flush()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_records(data: st.DataObject) -> None:
    raw = bytearray(GOLDEN.encode("gb2312") + b"\r\n")
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    stream = PanelStream(panel())
    stream.feed(bytes(raw))
    stream.flush()


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches: list[SampleBatch] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        self.events.append(event)


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_listener_over_pty_and_port_loss(tmp_path: Path) -> None:
    assert DRIVER.protocol == "firepanel" and DRIVER.factory is FirePanelDriver
    link = tmp_path / "ttyPANEL"
    async with FirePanelStream(link=link) as generator:
        bus = FirePanelBusConfig(id="panel-1", protocol="firepanel", port=str(link))
        assert (bus.serial.baudrate, bus.serial.parity) == (9600, "N")
        driver = FirePanelDriver(bus, [panel()])
        sink = Sink()
        await driver.open()
        task = asyncio.create_task(driver.listen(sink))
        try:
            await generator.alarm(4, 4, location="一层大厅东侧")
            await generator.noise()
            await generator.send("GST200 V2.31".encode("gb2312") + generator.line_end)
            await generator.fault()
            await generator.reset()
            await until(lambda: any(e.kind == "panel_reset" for e in sink.events))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kinds = [(e.kind, e.state) for e in sink.events]
        assert (
            kinds[0] == ("smoke", EventState.RAISED)
            and sink.events[0].attrs["location_text"] == "一层大厅东侧"
        )
        assert ("panel_fault", EventState.RAISED) in kinds and kinds[-1] == ("panel_reset", EventState.RAISED)
        raw = [s.value for b in sink.batches for s in b.samples if s.point == "raw"]
        assert raw == ["GST200 V2.31"]  # the unknown text line; the noise line is garbage, not stored
        status = (await driver.diag("status", {}))["panels"][0]
        assert status["records"] == 3 and status["raw_lines"] == 1 and status["active"] == []
        assert status["garbage_lines"] == 1 and status["garbage_bytes"] >= 16
        with pytest.raises(PermanentError):
            await driver.diag("reset", {})
        task = asyncio.create_task(driver.listen(sink))
        await asyncio.sleep(0.05)
    # the generator closed the pty: the listener ends with ChannelError for the owner to reopen
    with pytest.raises(ChannelError):
        await asyncio.wait_for(task, 5.0)
    await driver.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=5))
def test_fuzz_text_lines_never_raise(lines: list[str]) -> None:
    stream = PanelStream(panel())
    for line in lines:
        stream.feed(line.encode("gb18030", errors="replace") + b"\r\n")
    stream.flush()


_WORDS = [w for w, *_ in EVENT_WORDS]
_PLACE = st.text(alphabet="一二三层大厅东西侧走廊车库配电间楼梯AB", min_size=1, max_size=12).filter(
    lambda t: not any(w in t for w in _WORDS)
)


@settings(deadline=None)  # a shared, noisy CI machine: no per-example deadline
@given(
    st.sampled_from(["首次火警", "火警", "故障", "故障恢复", "监管", "屏蔽", "取消屏蔽"]),
    st.integers(0, 999),
    st.integers(0, 999),
    st.sampled_from(["感烟探测器", "感温探测器", "手动报警按钮", "消火栓按钮", "输入模块"]),
    _PLACE,
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
)
def test_roundtrip_generator_format(
    word: str, loop: int, device: int, device_type: str, place: str, when: datetime
) -> None:
    stamp = when.strftime("%y/%m/%d %H:%M")
    line = f"{word}  {stamp}  {loop:03d}回路{device:03d}号  {device_type}  {place}"
    record = parser_for("gst").parse_line(line)
    assert record is not None
    assert (record.event_text, record.loop, record.device, record.device_type, record.location) == (
        word,
        loop,
        device,
        device_type,
        place,
    )
    assert record.panel_time == when.replace(second=0, microsecond=0).isoformat()
    assert record.kind is not RecordKind.SMOKE or "感烟" in device_type


def test_panel_events_keep_the_alarm_registry_true() -> None:
    """What the panel raises is active in the gateway's registry (citynerve.gateway.alarms) until the panel
    clears it: per loop-device, a device-less 故障恢复 for all, a reset for everything (also what was
    raised before a restart, which the stream no longer knows)."""
    from citynerve.gateway.alarms import ActiveAlarms

    registry = ActiveAlarms()

    def feed(stream: PanelStream, line: str) -> set[tuple[str, str]]:
        for item in stream.feed(line.encode("gb2312") + b"\r\n"):
            if isinstance(item, Event):
                registry.apply(item)
        return {(a.kind, a.subject) for a in registry.active()}

    stream = PanelStream(panel())
    assert feed(stream, GOLDEN) == {("smoke", "004-004")}
    assert feed(stream, "火警  08/12/02 17:25  004回路005号  感烟探测器  一层大厅西侧") == {
        ("smoke", "004-004"),
        ("smoke", "004-005"),
    }
    feed(stream, "故障 08/12/02 17:26 001-012 手动报警按钮 二层")
    assert ("panel_fault", "001-012") in {(a.kind, a.subject) for a in registry.active()}
    assert feed(stream, "故障恢复 08/12/02 17:27") == {("smoke", "004-004"), ("smoke", "004-005")}
    # The gateway restarts: a fresh stream, the registry restored; the reset still clears it all.
    assert feed(PanelStream(panel()), "复位 08/12/02 17:40") == set()
