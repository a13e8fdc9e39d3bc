"""`citynerve diag rules replay`: a site's exported readings through its config's rules, off line.

The oracle is the gateway itself: a scenario's readings go through the real Pipeline and RuleEngine
(hil/eval's harness, what `citynerve run` does with them); the same readings written as CSV and replayed
from the command line must raise the same alarms at the same times. From what the platform stored
(the pipeline's report by exception) each alarm comes within one read of the gateway's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import Event, EventState, Reading
from citynerve.gateway.cli import main
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import replay as replay_module
from citynerve.hil.eval import water_situations
from citynerve.hil.eval.harness import replay as gateway_replay
from citynerve.hil.eval.model import Scenario

HEAD = """[gateway]
id = "gw-replay"
org = { city = "310100", district = "310106", street = "310106013" }
[store]
path = "gw.db"
"""
METERS = """[[buses]]
id = "rs485-water"
protocol = "cjt188"
port = "/dev/ttyUSB1"
[[devices]]
id = "wm-301"
bus = "rs485-water"
profile = "cjt188-water-cold"
address = "00000000000301"
tags = ["elderly-alone"]
location = { address_code = "310106013012", room = "301" }
[[devices]]
id = "wm-302"
bus = "rs485-water"
profile = "cjt188-water-cold"
address = "00000000000302"
location = { address_code = "310106013012", room = "302" }
"""
RULES = """[rules]
[[rules.packs]]
name = "elderly-water"
select = { tags = ["elderly-alone"] }
[[rules.actions]]
id = "close_valve"
on = ["elderly-water.water_leak"]
point = "valve"
value = "close"
"""
SHANGHAI = timezone(timedelta(hours=8))


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["diag", "rules", "replay", *args])
    return r.exit_code, r.stdout, r.stderr


def write_csv(path: Path, readings: Sequence[Reading]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "device", "point", "value", "quality"])
        for r in readings:
            value = "" if r.value is None else r.value
            w.writerow([repr(r.ts), r.device_id, r.point, value, r.quality.value])


def scenario_config(path: Path, scn: Scenario) -> None:
    text = HEAD + '[rules]\n[[rules.packs]]\nname = "elderly-water"\n'
    text += '[[buses]]\nid = "sim"\nprotocol = "cjt188"\nport = "/dev/ttyUSB9"\n'
    for d in scn.devices:
        text += f'[[devices]]\nid = "{d.id}"\nbus = "sim"\nprofile = "{d.profile}"\n'
        text += f'address = "{int(str(d.address)):014d}"\nlocation = {{ address_code = "320508001001" }}\n'
    path.write_text(text)


class _Tap:
    """The pipeline's rules hook that keeps every normalized reading (what the engine is given)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        self.readings += readings
        return ()

    def tick(self, now: float) -> Sequence[Event]:
        return ()


class _Platform:
    """The pipeline's sink: the readings it reports (by exception), i.e. what the platform stores."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.readings += readings

    def put_event(self, event: Event) -> None:
        pass


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def water() -> tuple[Scenario, list[Reading], list[Reading], list[Event]]:
    scn = water_situations.build(seed=60, households=8, days=20)
    tap, platform = _Tap(), _Platform()
    pipe = Pipeline({d.id: d for d in scn.devices}, platform, tap)
    for batch in scn.batches:
        pipe.submit(batch)
    return scn, tap.readings, platform.readings, gateway_replay(scn).events


def test_replay_raises_what_the_gateway_raised(tmp_path: Path, water) -> None:
    scn, every, _, events = water
    write_csv(tmp_path / "r.csv", every)
    scenario_config(tmp_path / "gw.toml", scn)
    code, out, err = cli(str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["readings"] == len(every) and report["devices"] == len(scn.devices)
    got = sorted((a["device"], a["rule"], a["raised"]) for a in report["alarms"])
    want = sorted((e.device_id, e.rule, _iso(e.ts)) for e in events if e.state is EventState.RAISED)
    assert len(want) >= 5 and got == want
    cleared = sorted((a["device"], a["rule"], a["cleared"]) for a in report["alarms"] if a["cleared"])
    clears = [e for e in events if e.state is EventState.CLEARED]
    assert cleared == sorted((e.device_id, e.rule, _iso(e.ts)) for e in clears)


def test_replay_of_what_the_platform_stored_is_within_one_read(tmp_path: Path, water) -> None:
    scn, every, reported, events = water
    assert len(reported) < len(every)  # unchanged totals within max_interval_s were not sent
    write_csv(tmp_path / "r.csv", reported)
    scenario_config(tmp_path / "gw.toml", scn)
    code, out, err = cli(str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"), "--json")
    assert code == 0, err
    got = sorted(
        (a["device"], a["rule"], datetime.fromisoformat(a["raised"]).timestamp())
        for a in json.loads(out)["alarms"]
    )
    want = sorted((e.device_id, e.rule, e.ts) for e in events if e.state is EventState.RAISED)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert all(abs(g[2] - w[2]) <= 960 for g, w in zip(got, want, strict=True))  # one 15-min read


def _household_csv(path: Path, stamp) -> None:  # type: ignore[no-untyped-def]
    """Two flats for three days; 301 uses no water from 06:00 on the second day (a 12 h no-use)."""
    t0 = datetime(2026, 9, 14, tzinfo=SHANGHAI)
    total = {"wm-301": 100.0, "wm-302": 50.0}
    rows = [["ts", "device", "point", "value"]]
    for k in range(4 * 24 * 3):
        t = t0 + timedelta(minutes=15 * k)
        for dev in total:
            if 7 <= t.hour <= 22 and not (dev == "wm-301" and t.day == 15):
                total[dev] += 0.004
            rows.append([stamp(t), dev, "flow_total", f"{total[dev]:.3f}"])
    rows += [[stamp(t0), "wm-999", "flow_total", "1"], [stamp(t0), "wm-301", "pressure", "0.3"]]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_text_and_json_and_every_way_of_writing_time(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text(HEAD + RULES + METERS)
    cfg = str(tmp_path / "gw.toml")
    stamps = {
        "epoch": lambda t: f"{t.timestamp():.0f}",
        "offset": lambda t: t.isoformat(),
        "naive": lambda t: t.replace(tzinfo=None).isoformat(sep=" "),
    }
    reports = {}
    for name, stamp in stamps.items():
        _household_csv(tmp_path / f"{name}.csv", stamp)
        code, out, err = cli(str(tmp_path / f"{name}.csv"), "-c", cfg, "--tz", "Asia/Shanghai", "--json")
        assert code == 0, err
        reports[name] = json.loads(out)
    assert reports["epoch"] == {**reports["offset"], "file": reports["epoch"]["file"]}
    assert reports["naive"]["alarms"] == reports["offset"]["alarms"]
    report = reports["offset"]
    alarms = {a["event"]: a for a in report["alarms"]}
    assert sorted(alarms) == ["water_no_use", "water_no_use_day"]  # 302 is not selected by the pack
    # the last use was at 22:45 on the 14th; 8 L of it fall in the 12 h before 10:15 on the 15th
    assert alarms["water_no_use"]["raised"] == "2026-09-15T10:15:00+08:00"
    assert alarms["water_no_use"]["cleared"] == "2026-09-16T07:30:00+08:00"
    assert report["skipped"] == {"rows": 2, "devices": {"wm-999": 1}, "points": {"wm-301/pressure": 1}}
    assert report["from"] == "2026-09-14T00:00:00+08:00" and report["readings"] == 576
    code, out, _ = cli(str(tmp_path / "offset.csv"), "-c", cfg, "--tz", "Asia/Shanghai")
    assert code == 0
    assert (
        "576 readings of 2 devices, 2026-09-14 00:00 +08:00 to 2026-09-16 23:45 +08:00: 2 alarms raised"
        in out
    )
    assert (
        "2026-09-15 10:15 +08:00  wm-301  water_no_use, cleared 2026-09-16 07:30 +08:00: less than 0.01 m3"
        in out
    )
    assert "skipped 1 rows of devices not in the config: wm-999" in out


@pytest.mark.parametrize(
    ("rows", "line", "says"),
    [
        # 02:00-03:00 happens twice on 2026-10-25 in Zurich (CEST, then CET): which pass is unknown
        (
            ["2026-10-25T01:59:59", "2026-10-25T02:30:00", "2026-10-25T03:00:00"],
            3,
            "time '2026-10-25T02:30:00' happens twice in Europe/Zurich (the hour repeated when DST ends: "
            "2026-10-25T02:30:00+02:00 or 2026-10-25T02:30:00+01:00)",
        ),
        (["2026-10-25 02:00"], 2, "time '2026-10-25 02:00' happens twice in Europe/Zurich"),
        # 02:00-03:00 never happens on 2026-03-29
        (
            ["2026-03-29T01:59:59", "2026-03-29T02:30:00"],
            3,
            "time '2026-03-29T02:30:00' does not exist in Europe/Zurich (the clocks jumped over it",
        ),
    ],
    ids=["repeated", "repeated-from-its-start", "skipped"],
)
def test_a_wall_time_dst_repeats_or_skips_is_refused(
    tmp_path: Path, rows: list[str], line: int, says: str
) -> None:
    """Taken silently, a repeated hour's second pass got the first pass's stamps (a meter's totals
    then out of order, a bed sensor's changes an hour early), and a skipped time became another."""
    (tmp_path / "gw.toml").write_text(HEAD + RULES + METERS)
    data = "".join(f"{t},wm-301,flow_total,{100 + k}\n" for k, t in enumerate(rows))
    (tmp_path / "r.csv").write_text("ts,device,point,value\n" + data)
    code, out, err = cli(str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"), "--tz", "Europe/Zurich")
    assert code == 2 and "Traceback" not in err + out
    assert f"r.csv, line {line}: {says}" in err
    assert "write it with its UTC offset or as seconds since 1970" in err


def test_times_in_the_repeated_hour_are_told_apart(tmp_path: Path) -> None:
    """With their offsets the two passes of 02:30 are two readings an hour apart, and the text says
    so (cut to the minute without the offset, both printed as 02:30)."""
    (tmp_path / "gw.toml").write_text(HEAD + RULES + METERS)
    rows = [
        "2026-10-25T02:30:00+02:00,wm-301,flow_total,100",
        "2026-10-25T02:30:00+01:00,wm-301,flow_total,101",
    ]
    (tmp_path / "r.csv").write_text("ts,device,point,value\n" + "\n".join(rows) + "\n")
    args = (str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"), "--tz", "Europe/Zurich")
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["from"], report["to"]) == ("2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00")
    code, out, err = cli(*args)
    assert code == 0, err
    assert "2 readings of 1 devices, 2026-10-25 02:30 +02:00 to 2026-10-25 02:30 +01:00" in out
    code, out, err = cli(*args[:3])  # without --tz: UTC, and the text says so
    assert "2026-10-25 00:30 +00:00 to 2026-10-25 01:30 +00:00" in out


def test_an_action_is_listed_not_carried_out(tmp_path: Path) -> None:
    """A day of flow in every half-hour raises water_leak; its close_valve action is a dry run."""
    (tmp_path / "gw.toml").write_text(HEAD + RULES + METERS)
    t0 = datetime(2026, 9, 14, tzinfo=SHANGHAI).timestamp()
    rows = [f"{t0 + 900 * k:.0f},wm-301,flow_total,{100 + 0.002 * k:.3f}" for k in range(4 * 26)]
    (tmp_path / "r.csv").write_text("ts,device,point,value\n" + "\n".join(rows) + "\n")
    code, out, err = cli(str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [a["event"] for a in report["alarms"]] == ["water_continuous_flow"]
    assert report["alarms"][0]["severity"] == "major"  # named, as every other JSON output does
    assert [(a["device"], a["rule"]) for a in report["actions"]] == [("wm-301", "close_valve")]
    assert "dry run" in report["actions"][0]["message"]


@pytest.mark.parametrize(
    ("content", "line", "says"),
    [
        ("", 0, "empty: expected a header row"),
        ("time,device,value\n1,wm-301,1\n", 1, "no point column"),
        ("ts,device,point,value\nyesterday,wm-301,flow_total,1\n", 2, "time 'yesterday': seconds since 1970"),
        ("ts,device,point,value\n2026-09-14 08:00,wm-301,flow_total,1\n", 2, "has no UTC offset"),
        ("ts,device,point,value\n-5,wm-301,flow_total,1\n", 2, "not between 1970 and 2100"),
        ("ts,device,point,value,quality\n1e9,wm-301,flow_total,1,great\n", 2, "quality 'great': one of"),
        ("ts,device,point,value\n1e9,wm-301\n", 2, "expected 4 cells"),
        ("ts,device,point,value\n1e9,wm-301,flow_total," + "9" * 300 + "\n", 2, "at most 256 characters"),
        ("ts,device,point,value\n1e9,wm-301,flow_total,\x001\n", 2, "a control character"),
        ('ts,device,point,value\n1e9,wm-301,flow_total,"1\n2"\n', 2, "a control character"),
    ],
)
def test_a_bad_file_is_one_line_naming_where(tmp_path: Path, content: str, line: int, says: str) -> None:
    (tmp_path / "gw.toml").write_text(HEAD + RULES + METERS)
    (tmp_path / "r.csv").write_text(content)
    code, out, err = cli(str(tmp_path / "r.csv"), "-c", str(tmp_path / "gw.toml"))
    assert code == 2 and says in err and "Traceback" not in err + out
    assert (f"r.csv, line {line}:" if line else "r.csv: ") in err


def test_bad_arguments_and_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(HEAD + RULES + METERS)
    data = tmp_path / "r.csv"
    rows = "".join(f"{1e9 + k},wm-301,flow_total,1\n" for k in range(20))
    data.write_text("ts,device,point,value\n" + rows)
    code, _, err = cli(str(data), "-c", str(cfg), "--tz", "Mars/Olympus")
    assert code == 2 and "not a time zone" in err
    code, _, err = cli(str(tmp_path / "none.csv"), "-c", str(cfg))
    assert code == 2 and "cannot read" in err
    latin1 = "ts,device,point,value\n1e9,wm-301,flow_total,\xe9\n".encode("latin-1")
    (tmp_path / "latin1.csv").write_bytes(latin1)
    code, _, err = cli(str(tmp_path / "latin1.csv"), "-c", str(cfg))
    assert code == 2 and "not UTF-8" in err
    (tmp_path / "norules.toml").write_text(HEAD + METERS)
    code, _, err = cli(str(data), "-c", str(tmp_path / "norules.toml"))
    assert code == 2 and "no [rules] table" in err
    monkeypatch.setattr(replay_module, "MAX_ROWS", 10)
    code, _, err = cli(str(data), "-c", str(cfg))
    assert code == 2 and "line 12: more than 10 rows" in err
    monkeypatch.setattr(replay_module, "MAX_BYTES", 100)
    code, _, err = cli(str(data), "-c", str(cfg))
    assert code == 2 and "larger than" in err and "line" not in err
