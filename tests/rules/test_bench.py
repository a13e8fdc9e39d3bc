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
