"""The benchmark script runs and prints the keys the issue names (tiny sizes: this is not a timing)."""

from __future__ import annotations

import json

import pytest

from citynerve.hil.bench import rules


def test_rules_bench_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    rules.main(["--json", "--devices", "20", "--rounds", "2", "--no-pin"])
    out = json.loads(capsys.readouterr().out)
    for key in ("us_per_reading", "readings_per_s_rules_on", "readings_per_s_rules_off"):
        assert out[key] > 0
    assert out["engine_rule_instances"] == 20 * 10
    assert out["pipeline_rule_instances"] == 20 * 12
    assert out["pipeline_events_per_run"] == 0


def test_rules_build_bench_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from citynerve.hil.bench import rules_build

    rules_build.main(["--json", "--devices", "20", "--runs", "1"])
    row = json.loads(capsys.readouterr().out)["sizes"][0]
    assert row["devices"] == 20 and row["instances"] == 20 * 3  # smoke_register, unwanted, confirmed
    assert row["baseline_instances"] == 20
    for key in ("build_s", "baseline_without_composites_s", "build_engine_s", "longest_loop_gap_s"):
        assert row[key] >= 0
