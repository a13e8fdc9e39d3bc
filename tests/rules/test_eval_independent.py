"""Independent evaluation (issue 18): physical-situation models, labelled by what happened, replayed
through the real pipeline and engine. The figures are what they are: the test pins the packs that
meet the 0.9 floor and that no pack misses more than one incident in eight."""

from __future__ import annotations

import json

import pytest

from citynerve.hil.eval import INDEPENDENT, SCENARIOS
from citynerve.hil.eval.bed import build as bed
from citynerve.hil.eval.hydrant import build as hydrant
from tests import background


def test_models_are_deterministic_with_their_seed() -> None:
    a, b = bed(residents=4, days=6), bed(residents=4, days=6)
    assert a.batches == b.batches and a.episodes == b.episodes
    assert bed(seed=1, residents=4, days=6).batches != a.batches
    h = hydrant(hydrants=4, days=2)
    assert h.batches == hydrant(hydrants=4, days=2).batches


def test_labels_come_from_the_situation_not_from_the_pack() -> None:
    # The bed model's episodes start when the resident left the bed or an hour after their own wake
    # time; none starts at the pack's 09:00 or 40 min after leaving.
    scn = bed(residents=16, days=30)
    kinds = {k for e in scn.episodes for k in e.kinds}
    assert {"not_back_in_bed", "not_up"} <= kinds
    assert all(e.what for e in scn.episodes)
    h = hydrant(hydrants=12, days=7)
    assert {e.what for e in h.episodes} >= {"water drawn from the hydrant"}


@pytest.mark.slow
def test_independent_scores_through_the_benchmark_json() -> None:
    # One run of the benchmark script as a reader runs it (`python -m citynerve.hil.bench.rules_eval
    # --json --small`, a process of its own) carries every figure checked here. It is started when the
    # session begins and overlaps the rest of the suite (tests/background.py); its figures depend on
    # its seeds only. Exit status 1: rows below their floors (docs/benchmarks.md says which and why).
    code, stdout, stderr = background.result(background.RULES_EVAL)
    assert code in (0, 1), stderr[-4000:]
    out = json.loads(stdout)
    assert out["manhole"]["data"] == "rule-labelled"
    assert out["fire-hydrant"]["data"] == "independent" and out["fire-hydrant"]["floor_met"] is True
    scores = {}
    for pack in INDEPENDENT:
        key = f"{pack}/independent" if pack in SCENARIOS else pack
        scores[pack] = out[key]
        assert out[key]["data"] == "independent" and out[key]["episodes"] >= 5, (pack, out[key])
        assert {"precision", "recall", "f1", "median_delay_s", "floor_met"} <= set(out[key])
        # Below: the published water rules miss short incidents; the old packs' misses (slid covers, deep
        # surcharges, gas between the entry and the alarm lines, appliances under 0.6 kW): benchmarks.md.
        # household rows: sleepless spells and unannounced absences look like a fall (benchmarks.md).
        if pack not in SCENARIOS and pack not in ("household", "household-packs"):
            assert out[key]["recall"] >= 0.85, (pack, out[key])
    for pack in ("fire-hydrant", "fire-lane", "litter-bin", "curtain-wall", "entrance"):
        assert scores[pack]["f1"] >= 0.9, (pack, scores[pack])
    # The smoke pack's confirmed stage is its own row, on the same fires, never ahead of the immediate one
    # (a coincidence of the flat's two detectors since issue 18: no longer a fixed 180 s behind it).
    confirmed, immediate = out["smoke-fire/confirmed"], out["smoke-fire/independent"]
    assert confirmed["data"] == "independent" and confirmed["episodes"] == immediate["episodes"]
    assert confirmed["recall"] == 1.0 and confirmed["median_delay_s"] >= immediate["median_delay_s"]
    assert confirmed["false_alarms"] < immediate["false_alarms"]


def test_lamps_the_controller_does_not_diagnose_are_found_by_the_gateway() -> None:
    # Every third controller of the lamp model has no open-circuit bit: its failed lamps are found by
    # the pack's lamp_no_current (lamp_dark, derived by the gateway) alone.
    from citynerve.hil.eval import harness
    from citynerve.hil.eval.lamps import build as lamps

    scn = lamps(lamps=12, days=5)
    events = harness.replay(scn).events
    score = harness.score(scn, events)
    assert score.f1 >= 0.9 and score.false_alarms == 0, score.figures()
    bit_only = harness.score(scn, [e for e in events if e.kind != "lamp_no_current"])
    assert {e.device_id for e in bit_only.missed} == {"lamp-00"}  # failed, its controller silent
    assert harness.score(scn, [e for e in events if e.kind != "lamp_out"]).recall == 1.0
