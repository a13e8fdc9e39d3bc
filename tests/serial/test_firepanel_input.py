"""Hostile and damaged input on a fire panel's printer port: a noise byte inside a real alarm line,
garbage floods, config that cannot decode a line. A fire alarm is never lost to a noise byte, and
garbage stays bounded and counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from citynerve.drivers.firepanel import PanelStream
from citynerve.drivers.serialio.guard import LineGuard
from citynerve.gateway.api import ConfigError, Event, EventState, SampleBatch
from citynerve.gateway.config import load_config
from tests.serial.test_firepanel import GOLDEN, panel

FIRE_KINDS = {"fire", "smoke"}
DATA = Path(__file__).parent / "data"


def fire_events(items: list[Event | SampleBatch]) -> list[Event]:
    return [
        e for e in items if isinstance(e, Event) and e.kind in FIRE_KINDS and e.state is EventState.RAISED
    ]


def char_boundaries(text: str, encoding: str) -> list[int]:
    """Byte offsets between the characters of `text` encoded (a noise byte lands between two
    characters; one landing inside a two-byte character garbles that character's neighbours)."""
    offsets, pos = [0], 0
    for ch in text:
        pos += len(ch.encode(encoding))
        offsets.append(pos)
    return offsets


def test_a_noise_byte_anywhere_between_characters_keeps_the_fire_alarm() -> None:
    line = GOLDEN.encode("gb18030")
    for noise in (b"\xff", b"\x80", b"\x00\x07"):
        for at in char_boundaries(GOLDEN, "gb18030"):
            stream = PanelStream(panel())
            out = stream.feed(line[:at] + noise + line[at:] + b"\r\n")
            raised = fire_events(out)
            assert len(raised) == 1, (noise, at, GOLDEN.encode("gb18030")[:at].decode("gb18030"))
            assert raised[0].attrs["loop"] == 4 and raised[0].attrs["device"] == 4
            values = {s.point: s.value for b in out if isinstance(b, SampleBatch) for s in b.samples}
            assert values["fire"] is True
            assert stream.guard.status()["garbage_lines"] == 0


def test_the_reviewers_line_noise_in_the_location_text() -> None:
    line = GOLDEN.encode("gb18030")
    out = PanelStream(panel()).feed(line[:-4] + b"\xff" + line[-4:] + b"\r\n")
    (event,) = fire_events(out)
    assert event.kind == "smoke" and event.attrs["location_text"] == "一层大厅东侧"
    assert "\ufffd" in event.attrs["raw"]  # the line as heard


def test_garbage_that_does_not_parse_is_still_refused_and_limited() -> None:
    stream = PanelStream(panel())
    now = [100.0]
    stream.guard = LineGuard("panel fp-1", raw_per_s=1.0, raw_burst=3, clock=lambda: now[0])
    noise = bytes(range(0x80, 0x100)) + b"\r\n"  # invalid GB18030 and control bytes: not text
    unparsed = "GST200 V2.31 \ufffd打印机".encode("gb18030").replace("\ufffd".encode("gb18030"), b"\xff")
    out: list[Event | SampleBatch] = []
    for _ in range(50):
        out += stream.feed(noise)
        out += stream.feed(b"\x01\x02\x03\x04abc\r\n")
        out += stream.feed(b"a" * 600 + b"\n")  # too long, never parsed
    assert out == []
    for _ in range(10):
        out += stream.feed("GST200 V2.31 打印机就绪\r\n".encode("gb18030"))  # text, no record
        out += stream.feed(unparsed + b"\r\n")  # a replacement character, no record: garbage
    assert len(out) == 3  # the raw burst, then the rate
    status = stream.guard.status()
    assert status["garbage_lines"] == 150 + 10 + 7 and status["raw_dropped"] == 7
    assert stream.state.lines == 10 and stream.state.records == 0
    # an alarm after all that still gets through, noise byte and all
    line = GOLDEN.encode("gb18030")
    assert len(fire_events(stream.feed(line[:10] + b"\xff" + line[10:] + b"\r\n"))) == 1


@pytest.mark.parametrize(
    "encoding",
    [
        "hex",
        "base64",
        "rot13",
        "zlib",
        "bz2",
        "utf-16",
        "utf-16-le",
        "utf-32",
        "cp037",
        "idna",
        "no-such-codec",
    ],
)
def test_an_encoding_the_listener_cannot_read_lines_in_is_a_config_error(
    encoding: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as info:
        panel(encoding=encoding)
    (error,) = info.value.errors()
    assert error["loc"] == ("encoding",) and repr(encoding) in error["msg"]
    # through the gateway's loader: one issue naming the key path (a bare LookupError before)
    text = (DATA / "building-meters.toml").read_text(encoding="utf-8")
    text = text.replace('profile = "firepanel-gst"', f'profile = "firepanel-gst"\nencoding = "{encoding}"')
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as loaded:
        load_config(path)
    (issue,) = loaded.value.issues
    assert issue.path.endswith(".encoding") and repr(encoding) in issue.message, str(issue)


@pytest.mark.parametrize("encoding", ["gb18030", "gb2312", "GBK", "big5", "utf-8", "latin-1"])
def test_text_encodings_still_read_lines(encoding: str) -> None:
    stream = PanelStream(panel(encoding=encoding))
    line = GOLDEN if encoding not in ("big5", "latin-1") else "火警 004回路004号"
    try:
        data = line.encode(encoding)
    except UnicodeEncodeError:
        data = "FIRE 004-004".encode(encoding)  # not a record in latin-1: a raw line, no crash
    out = stream.feed(data + b"\r\n")
    assert out  # an event and values, or a raw line


PIECES = [
    (GOLDEN + "\r\n").encode("gb18030"),
    "故障 24/03/05 08:01 001-012 感温探测器 车库\n".encode("gb18030"),
    "故障恢复 24/03/05 08:05 001-012 感温探测器 车库\r".encode("gb18030"),
    "复位 08/12/02 17:40\r\n".encode("gb18030"),
    b"\x01\x02\x03\x04\r\n",
    b"\xff" * 300 + b"\n",  # (a line over MAX_LINE without its end is cut where the chunk ends)
]


def summary(stream: PanelStream, items: list[Event | SampleBatch]) -> tuple[object, ...]:
    events = [(e.kind, e.state, e.value) for e in items if isinstance(e, Event)]
    return (events, stream.guard.status(), stream.state.lines, stream.state.records)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(1, 700), max_size=20))
def test_one_big_chunk_reads_like_many_small_ones(pieces: list[bytes], cuts: list[int]) -> None:
    """feed() takes a chunk in one pass (it re-sliced the rest per line: quadratic in the chunk);
    what comes out does not depend on how the bytes were chunked."""
    data = b"".join(pieces)
    whole = PanelStream(panel())
    expected = summary(whole, whole.feed(data))
    split = PanelStream(panel())
    items: list[Event | SampleBatch] = []
    pos = 0
    for cut in cuts:
        items += split.feed(data[pos : pos + cut])
        pos += cut
    items += split.feed(data[pos:])
    assert summary(split, items) == expected


def test_the_raised_table_is_bounded_and_no_alarm_is_lost_past_it() -> None:
    """A print stream naming thousands of loop-devices (noise, a wrong panel model, a hostile line)
    cannot grow the table without bound: past MAX_ACTIVE a record still raises its event and its
    clear is passed on; it is only not remembered (counted in `untracked`)."""
    from citynerve.drivers.firepanel._driver import MAX_ACTIVE

    stream = PanelStream(panel())
    lines = [
        f"首次火警  08/12/02 17:24  L{n // 1000:03d}D{n % 1000:03d}  感烟探测器  房间{n}"
        for n in range(MAX_ACTIVE + 500)
    ]
    raised = fire_events(stream.feed("\r\n".join(lines).encode("gb18030") + b"\r\n"))
    assert len(raised) == MAX_ACTIVE + 500  # every alarm reached the gateway
    assert len(stream.state.active) == MAX_ACTIVE and stream.state.untracked == 500
    fault = [
        e
        for e in stream.feed("故障  08/12/02 17:30  L900D900  感烟探测器\r\n".encode("gb18030"))
        if isinstance(e, Event)
    ]
    assert [(e.kind, str(e.state)) for e in fault] == [
        ("panel_fault", "raised")
    ] and stream.state.untracked == 501
    back = [
        e
        for e in stream.feed("故障恢复  08/12/02 17:31  L900D900\r\n".encode("gb18030"))
        if isinstance(e, Event)
    ]
    assert [(e.subject, e.state) for e in back] == [("900-900", EventState.CLEARED)]  # its clear is passed on
    values = {
        s.point: s.value
        for b in stream.feed(lines[0].encode("gb18030") + b"\r\n")
        if isinstance(b, SampleBatch)
        for s in b.samples
    }
    assert values["alarms"] == MAX_ACTIVE and values["fire"] is True
