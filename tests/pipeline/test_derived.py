"""Derived points (gateway/pipeline/derived.py, issue 18): a manhole cover with the installer's
`crown_mm` gets `water_over_crown`, and the manhole pack's surcharge rule judges each well by it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import DeviceConfig, EventState, PointConfig, Quality, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.pipeline.derived import WATER_OVER_CROWN, derivations, derive, point_names
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.hil.eval.harness import CollectingSink

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
