"""Derived points (gateway/pipeline/derived.py, issue 18): a manhole cover with the installer's
`crown_mm` gets `water_over_crown`, and the manhole pack's surcharge rule judges each well by it; a
street lamp controller gets `lamp_dark` (switched on, no current) for the street-lamp pack."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    PointConfig,
    Quality,
    Reading,
    Sample,
    SampleBatch,
)
from citynerve.gateway.config import load_config
from citynerve.gateway.pipeline import NoRules, Pipeline
from citynerve.gateway.pipeline.derived import (
    DEFAULT_NO_LOAD_A,
    LAMP_DARK,
    WATER_OVER_CROWN,
    AnyDerivation,
    LampDark,
    derivations,
    derive,
    point_names,
)
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.hil.eval.harness import CollectingSink
from tests.config.test_config_errors import BUS, HEAD, LOC, issues, write

T0 = 1_790_000_000.0


def _cover(dev_id: str, crown_mm: float | None, scale: float = 1.0) -> DeviceConfig:
    data: dict[str, object] = {
        "id": dev_id,
        "bus": "ble",
        "profile": "bthome-manhole-cover",
        "address": "A4:C1:38:00:00:01",
        "location": {"address_code": "320508001001"},
        "points": {
            "tilt": PointConfig(unit="deg"),
            "water_level": PointConfig(unit="mm", scale=scale, deadband=20),
            "battery": PointConfig(unit="%"),
        },
    }
    if crown_mm is not None:
        data["crown_mm"] = crown_mm
    return DeviceConfig.model_validate(data)


def test_the_option_derives_the_point_from_the_engineering_value() -> None:
    dev = _cover("mh-1", 1800, scale=10.0)  # a node reporting cm
    (d,) = derivations(dev)
    assert d.point == WATER_OVER_CROWN and point_names(dev) == {
        "tilt",
        "water_level",
        "battery",
        WATER_OVER_CROWN,
    }
    batch = derive(SampleBatch("mh-1", T0, (Sample("water_level", 150), Sample("tilt", 0.4))), (d,))
    assert batch.samples[-1] == Sample(WATER_OVER_CROWN, 300.0)  # 1800 - 150 cm * 10
    # Unknown level, unknown depth of water: never a number made up.
    bad = derive(SampleBatch("mh-1", T0, (Sample("water_level", None, Quality.BAD),)), (d,))
    assert bad.samples[-1] == Sample(WATER_OVER_CROWN, None, Quality.BAD)
    plain = SampleBatch("mh-1", T0, (Sample("tilt", 0.4),))
    assert derive(plain, (d,)) is plain
    assert derivations(_cover("mh-2", None)) == ()


def test_bad_option_is_a_typed_error_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="crown_mm"):
        _cover("mh-1", -5)
    with pytest.raises(ValidationError, match="crown_mm"):
        _cover("mh-1", 50_000)


def test_surcharge_through_the_pipeline_each_well_by_its_own_depth() -> None:
    # Two wells in one storm: the water rises to 1.2 m below the cover in the shallow one (crown 1.4 m
    # deep), 0.5 m higher than its dry level in the deep one, still below its crown (2.3 m); a third
    # well like the shallow one has no crown measured.
    devs = [_cover("mh-shallow", 1400), _cover("mh-deep", 2300), _cover("mh-plain", None)]
    eng = RuleEngine(RulesConfig(packs=(PackRef(name="manhole"),)), devs, clock=lambda: T0)
    assert {i.device_id for i in eng.instances.values() if i.rule.id == "manhole.surcharge"} == {
        "mh-shallow",
        "mh-deep",
    }
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in devs}, sink, eng)
    levels = [1700, 1600, 1500, 1350, 1200, 1200, 1350, 1600, 1700]  # mm below the cover, every 300 s
    deep = [2800, 2700, 2600, 2450, 2300 + 1, 2350, 2450, 2700, 2800]
    for k, level in enumerate(levels):
        t = T0 + 300.0 * k
        for d in devs:
            v = deep[k] if d.id == "mh-deep" else level
            pipe.submit(SampleBatch(d.id, t, (Sample("water_level", v), Sample("tilt", 0.3))))
        pipe.tick(t)
    pipe.tick(T0 + 300.0 * len(levels) + 1000)
    surcharge = [(e.device_id, e.state, e.ts - T0) for e in sink.events if e.kind == "manhole_surcharge"]
    # Raised at the first read above the shallow well's crown; cleared 100 mm below it, held 15 min.
    assert surcharge[0] == ("mh-shallow", EventState.RAISED, 900.0)
    assert surcharge[1][:2] == ("mh-shallow", EventState.CLEARED) and len(surcharge) == 2
    assert surcharge[1][2] >= 2100.0 + 900
    # The derived readings are stored like any other (report by exception, unit of the source).
    stored = [e for e in sink.events if e.device_id == "mh-plain"]
    assert not [e for e in stored if e.kind == "manhole_surcharge"]
    assert pipe.latest("mh-shallow")[WATER_OVER_CROWN].value == 1400 - 1700
    assert pipe.latest("mh-shallow")[WATER_OVER_CROWN].unit == "mm"
    assert WATER_OVER_CROWN not in pipe.latest("mh-plain")


def test_the_platform_inventory_lists_the_derived_point() -> None:
    from citynerve.gateway.inventory import _inventory_entry

    shared: dict[tuple[int, ...], list[dict[str, object]]] = {}
    plain = _inventory_entry(_cover("mh-plain", None), "bthome", shared)
    measured = _inventory_entry(_cover("mh-1", 1850), "bthome", shared)
    assert len(plain["points"]) == 3 and WATER_OVER_CROWN not in {p["name"] for p in plain["points"]}
    derived = [p for p in measured["points"] if p["name"] == WATER_OVER_CROWN]
    assert len(derived) == 1 and derived[0]["unit"] == "mm" and derived[0]["writable"] is False
    assert "1850" in str(derived[0]["description"])


# -- lamp_dark: a street lamp switched on that draws no current --------------------------------------


def _lamp(dev_id: str = "lamp-1", rated_current_a: float | None = None) -> DeviceConfig:
    data: dict[str, object] = {
        "id": dev_id,
        "bus": "rs485",
        "profile": "modbus-lamp-controller",
        "address": 31,
        "location": {"address_code": "320508001001"},
        "points": {
            "lamp_on": PointConfig(max_interval_s=900),
            "current": PointConfig(unit="A", scale=0.001, deadband=0.01),  # raw mA, as the profile
            "dimming": PointConfig(unit="%"),
            "lamp_fault": PointConfig(),
        },
    }
    if rated_current_a is not None:
        data["rated_current_a"] = rated_current_a
    return DeviceConfig.model_validate(data)


def _dark(table: tuple[AnyDerivation, ...], seen: dict[str, Sample], *samples: Sample) -> Sample | None:
    """The lamp_dark sample derived from one batch (None: the batch derives none)."""
    out = derive(SampleBatch("lamp-1", T0, samples), table, seen).samples[len(samples) :]
    assert len(out) <= 1
    return out[0] if out else None


def test_lamp_dark_is_relay_on_and_current_under_the_no_load_limit() -> None:
    (d,) = derivations(_lamp())
    assert isinstance(d, LampDark) and d.limit_a == DEFAULT_NO_LOAD_A == 0.02
    (rated,) = derivations(_lamp(rated_current_a=1.2))  # a 250 W HPS lamp
    assert isinstance(rated, LampDark) and rated.limit_a == pytest.approx(0.12)
    assert LAMP_DARK in point_names(_lamp()) and derivations(_cover("mh-1", None)) == ()
    seen: dict[str, Sample] = {}
    # Coil and registers come in separate batches of one poll: the relay is remembered.
    assert _dark((d,), seen, Sample("lamp_on", True)) is None
    assert _dark((d,), seen, Sample("current", 2)) == Sample(LAMP_DARK, True)  # 0.002 A
    assert _dark((d,), seen, Sample("current", 450)) == Sample(LAMP_DARK, False)  # lit
    assert _dark((d,), seen, Sample("current", 19)) == Sample(LAMP_DARK, True)  # under 0.02 A
    assert _dark((rated,), seen, Sample("current", 100)) == Sample(LAMP_DARK, True)  # under 0.12 A
    # Switched off: not dark while on, whatever the current.
    assert _dark((d,), seen, Sample("lamp_on", False), Sample("current", 1)) == Sample(LAMP_DARK, False)
    # Dimmed: the limit follows the level (dimmed to 0 with the relay on is dark on purpose).
    on = Sample("lamp_on", True)
    assert _dark((d,), seen, on, Sample("current", 15), Sample("dimming", 100)) == Sample(LAMP_DARK, True)
    assert _dark((d,), seen, on, Sample("current", 15), Sample("dimming", 50)) == Sample(LAMP_DARK, False)
    assert _dark((d,), seen, on, Sample("current", 2), Sample("dimming", 0)) == Sample(LAMP_DARK, False)


def test_lamp_dark_is_unknown_when_either_reading_is() -> None:
    (d,) = derivations(_lamp())
    assert _dark((d,), {}, Sample("current", 2)) == Sample(LAMP_DARK, None, Quality.BAD)  # relay never read
    seen = {"lamp_on": Sample("lamp_on", None, Quality.BAD)}  # the coil read failed
    assert _dark((d,), seen, Sample("current", 2)) == Sample(LAMP_DARK, None, Quality.BAD)
    seen = {"lamp_on": Sample("lamp_on", True)}
    assert _dark((d,), seen, Sample("current", None, Quality.BAD)) == Sample(LAMP_DARK, None, Quality.BAD)
    stale = Sample("current", 2, Quality.STALE)
    assert _dark((d,), seen, stale) == Sample(LAMP_DARK, None, Quality.STALE)
    # Without the caller's memory only the batch counts: a batch with both still derives.
    assert derive(SampleBatch("lamp-1", T0, (Sample("lamp_on", True), Sample("current", 2))), (d,)).samples[
        -1
    ] == Sample(LAMP_DARK, True)


def test_rated_current_is_checked_with_its_key() -> None:
    for bad in (0, -0.5, 500):
        with pytest.raises(ValidationError, match="rated_current_a"):
            _lamp(rated_current_a=bad)


def test_rated_current_in_a_config_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    text = (
        HEAD
        + BUS
        + f"""
[[devices]]
id = "lamp-1"
bus = "rs485-1"
profile = "modbus-lamp-controller"
address = 31
rated_current_a = -0.45
{LOC}

[[devices]]
id = "lamp-2"
bus = "rs485-1"
profile = "modbus-lamp-controller"
address = 32
rated_current_a = "half an amp"
{LOC}

[[devices]]
id = "lamp-3"
bus = "rs485-1"
profile = "modbus-lamp-controller"
address = 33
rated_current_a = 0.45
{LOC}
"""
    )
    found = issues(write(tmp_path, text))
    assert set(found) == {"devices[0].rated_current_a", "devices[1].rated_current_a"}, found
    assert "greater than 0" in found["devices[0].rated_current_a"]
    ok = write(tmp_path, HEAD + BUS + "[[devices]]" + text.split("[[devices]]")[-1], "ok.toml")  # lamp-3
    cfg = load_config(ok)
    (d,) = derivations(cfg.devices[0])
    assert isinstance(d, LampDark) and d.limit_a == pytest.approx(0.045) and d.scale == 0.001


def test_lamp_dark_through_the_pipeline_and_the_inventory() -> None:
    from citynerve.gateway.inventory import _inventory_entry

    dev = _lamp()
    eng = RuleEngine(RulesConfig(packs=(PackRef(name="street-lamp"),)), [dev], clock=lambda: T0)
    assert "street-lamp.no_current|lamp-1" in eng.instances
    sink = CollectingSink()
    pipe = Pipeline({dev.id: dev}, sink, eng)
    for k in range(5):  # switched on, dark: the relay's batch, then the registers'
        t = T0 + 60.0 * k
        pipe.submit(SampleBatch(dev.id, t, (Sample("lamp_on", True),)))
        pipe.submit(SampleBatch(dev.id, t + 0.05, (Sample("current", 3), Sample("lamp_fault", False))))
        pipe.tick(t + 0.05)
    ((kind, at),) = [(e.kind, e.ts) for e in sink.events if e.state is EventState.RAISED]
    assert kind == "lamp_no_current" and at == T0 + 180.05
    assert pipe.latest(dev.id)[LAMP_DARK].value is True and pipe.latest(dev.id)[LAMP_DARK].unit == ""
    (point,) = [p for p in _inventory_entry(dev, "modbus", {})["points"] if p["name"] == LAMP_DARK]
    assert point["writable"] is False and "0.02 A" in str(point["description"])


def test_a_derived_point_of_a_nan_infinite_or_huge_reading_is_unknown_through_the_pipeline() -> None:
    """derive() runs before normalisation: a NaN or infinite current is no current, a NaN dimming no
    level, and an int beyond 64 bits neither raises out of submit nor derives a depth."""
    lamp, cover = _lamp(), _cover("mh-1", 1800)
    seen: list[Reading] = []  # what the rules see: every normalized reading

    class Rules(NoRules):
        def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
            seen.extend(readings)
            return ()

    pipe = Pipeline({lamp.id: lamp, cover.id: cover}, CollectingSink(), Rules())
    on = Sample("lamp_on", True)
    for k, current in enumerate((math.nan, math.inf, -math.inf)):
        pipe.submit(SampleBatch(lamp.id, T0 + k, (on, Sample("current", current))))
    pipe.submit(SampleBatch(lamp.id, T0 + 3, (on, Sample("current", 15), Sample("dimming", math.nan))))
    pipe.submit(SampleBatch(lamp.id, T0 + 4, (on, Sample("current", 15), Sample("dimming", 50))))
    dark = [(r.ts - T0, r.value, r.quality) for r in seen if r.point == LAMP_DARK]
    # 15 mA under the 20 mA limit: dark at an unknown level (full power), lit dimmed to 50 %
    bad = Quality.BAD
    assert dark == [
        (0, None, bad),
        (1, None, bad),
        (2, None, bad),
        (3, True, Quality.GOOD),
        (4, False, Quality.GOOD),
    ]
    for big in (10**400, -(2**1024), 2**64):
        pipe.submit(SampleBatch(cover.id, T0, (Sample("water_level", big), Sample("tilt", 0.4))))
    pipe.submit(SampleBatch(cover.id, T0 + 1, (Sample("water_level", 500), Sample("tilt", 0.4))))
    crown = [(r.ts - T0, r.value, r.quality) for r in seen if r.point == WATER_OVER_CROWN]
    assert crown == [(0, None, bad)] * 3 + [(1, 1300.0, Quality.GOOD)]


def test_an_offline_device_forgets_its_relay() -> None:
    """After an outage the relay read before it is no state: a current read first after recovery
    (the probe is the registers' request) derives lamp_dark unknown until the relay is read again."""
    dev = _lamp()
    seen: list[Reading] = []

    class Rules(NoRules):
        def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
            seen.extend(readings)
            return ()

    pipe = Pipeline({dev.id: dev}, CollectingSink(), Rules())
    pipe.submit(SampleBatch(dev.id, T0, (Sample("lamp_on", True), Sample("current", 450))))
    pipe.mark_offline(dev.id, T0 + 60)
    pipe.submit(SampleBatch(dev.id, T0 + 3600, (Sample("current", 0),)))  # switched off meanwhile
    pipe.submit(SampleBatch(dev.id, T0 + 3601, (Sample("lamp_on", False), Sample("current", 0))))
    dark = [(r.ts - T0, r.value, r.quality) for r in seen if r.point == LAMP_DARK]
    assert dark == [(0, False, Quality.GOOD), (3600, None, Quality.BAD), (3601, False, Quality.GOOD)]
