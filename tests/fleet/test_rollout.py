"""The staged-rollout engine (hil/platform/rollout.py) with an in-process action: wave planning,
stopping on a failure rate, per-gateway report, exceptions and timeouts as failures."""

from __future__ import annotations

import asyncio

import pytest

from citynerve.hil.platform.rollout import (
    GatewayOutcome,
    WaveSpecError,
    parse_waves,
    plan_waves,
    rollout,
)

FLEET = [f"gw-{i:02d}" for i in range(20)]


def test_waves_are_planned_from_counts_percentages_and_rest() -> None:
    plan = plan_waves(FLEET, parse_waves("1,10%,rest"))
    assert [len(w) for w in plan] == [1, 2, 17]
    assert [g for w in plan for g in w] == FLEET
    assert [len(w) for w in plan_waves(FLEET[:3], ["1", "10%", "rest"])] == [1, 1, 1]
    assert [len(w) for w in plan_waves(FLEET, ["5", "5"])] == [5, 5]  # no rest: the others untouched
    for bad in ("", "0", "rest,1", "150%", "x%", "-1"):
        with pytest.raises(WaveSpecError):
            parse_waves(bad)


def test_a_wave_above_the_failure_rate_stops_the_rollout() -> None:
    done: list[str] = []

    async def action(gw: str) -> GatewayOutcome:
        done.append(gw)
        if gw in ("gw-02", "gw-05", "gw-06"):
            return GatewayOutcome(False, "reverted", "uplink not connected")
        if gw == "gw-07":
            raise RuntimeError("broker gone")
        return GatewayOutcome(True, "confirmed")

    report = asyncio.run(rollout(FLEET, action, waves=["1", "2", "5", "rest"], max_failure_rate=0.5))
    # wave 2 (gw-01, gw-02): 50 %, not above; wave 3 (gw-03..07): 3 of 5, above: stop
    assert [w.failed for w in report.waves] == [0, 1, 3]
    assert report.stopped and "wave 3" in report.reason
    assert sorted(done) == FLEET[:8]
    by_gw = {g.gateway: g for g in report.gateways}
    assert by_gw["gw-07"].outcome == "error" and "broker gone" in by_gw["gw-07"].detail
    assert by_gw["gw-02"].outcome == "reverted" and by_gw["gw-02"].wave == 2
    assert {by_gw[g].outcome for g in FLEET[8:]} == {"skipped"}
    assert report.outcomes == {"confirmed": 4, "reverted": 3, "error": 1, "skipped": 12}
    d = report.to_dict()
    assert d["waves"][2]["failure_rate"] == 0.6 and len(d["gateways"]) == 20


def test_every_wave_runs_when_below_the_threshold_and_slow_gateways_time_out() -> None:
    async def action(gw: str) -> GatewayOutcome:
        if gw == "gw-03":
            await asyncio.sleep(30)
        return GatewayOutcome(True, "confirmed")

    report = asyncio.run(
        rollout(FLEET, action, waves=["1", "10%", "rest"], max_failure_rate=0.1, gateway_timeout_s=0.2)
    )
    assert not report.stopped and len(report.waves) == 3
    assert report.outcomes == {"confirmed": 19, "timeout": 1}
