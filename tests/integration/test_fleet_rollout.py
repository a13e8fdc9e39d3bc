"""Deliverable 8 of issue 15: a fleet of real `citynerve run` processes on one Mosquitto
(hil/bench/fleet_harness.py; the same scenario as hil/bench/fleet.py):

1. a staged config rollout where some gateways get a config that fails health (their bus moved to
   a peer that never answers) and revert by themselves;
2. an away flag reaching the right gateway's rules: the shared water meter reports an error, every
   other gateway's household rule raises, that gateway's does not until the household is back;
3. a log upload (the chunked, hash-checked log tail of a gateway that reverted: it says why);
4. a command-key rotation of the whole fleet: every gateway answers the new key, not the old one.

20 gateways (marked long: about a minute on two cores) and 4 gateways in the default run, where
the second wave's failures also stop the rollout."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest

from citynerve.hil.bench.fleet import NOC_KEY, Fleet, scenario
from citynerve.hil.platform import CommandSigner
from citynerve.hil.platform.fleet import FleetClient
from tests.integration.test_run_fleet import until


async def run_and_check(
    fleet: Fleet, bad: set[str], *, waves: str, max_failure_rate: float, expected: dict[str, str], away: str
) -> dict[str, Any]:
    originals = {g: fleet.config_path(g).read_text() for g in fleet.ids}
    got = await scenario(fleet, bad, waves=waves, max_failure_rate=max_failure_rate, confirm_s=10, away=away)

    # 1. the rollout: confirmed, reverted by themselves, or skipped after a stop
    report = got["rollout"]
    by_gw = {g.gateway: g for g in report.gateways}
    assert {g: r.outcome for g, r in by_gw.items()} == expected, report.to_dict()
    for gw, outcome in expected.items():
        if outcome == "reverted":
            assert "devices faulted: wm-1" in by_gw[gw].detail, by_gw[gw].detail
        bus = tomllib.loads(fleet.config_path(gw).read_text())["buses"][0]
        if outcome == "confirmed":
            assert bus["timeout_s"] == 0.5, gw
        else:
            assert fleet.config_path(gw).read_text() == originals[gw], gw  # reverted or untouched
    want = {g: "v2" if o == "confirmed" else "local" for g, o in expected.items()}

    def versions() -> dict[str, str]:
        return {
            g: ((fleet.status_doc(g).get("gateway") or {}).get("config") or {}).get("version")
            for g in fleet.ids
        }

    await until(lambda: versions() == want, 60)
    for gw in (g for g, o in expected.items() if o == "reverted"):
        reverts = [e for e in fleet.events(gw, "config") if e["attrs"]["what"] == "reverted"]
        assert len(reverts) == 1 and reverts[0]["attrs"]["version"] == "v2", gw

    # 2. the away flag reached `away`'s rules only
    a = got["away"]
    assert a["raised_while_away"] is False, a
    whats = [w for kind, w in a["order"]]
    assert whats.index("away") < whats.index("back") < [k for k, _ in a["order"]].index("meter_error"), a
    assert all(fleet.raised(g) for g in fleet.ids)
    audits = {g: [e["attrs"]["what"] for e in fleet.events(g, "operator")] for g in fleet.ids}
    assert audits[away] == ["away", "back"] and all(not v for g, v in audits.items() if g != away), audits

    # 3. the log of a gateway that reverted says why
    log = got["log"]
    assert log["final"]["outcome"] == "ok" and b"reverting" in log["data"], log["final"]
    assert log["gateway"] in {g for g, o in expected.items() if o == "reverted"}

    # 4. the key rotation: every gateway took the new key and answers it; the old one is refused
    assert all(r["outcome"] == "ok" for r in got["rotation"].values()), got["rotation"]
    assert all(r["outcome"] == "ok" for r in got["after_rotation"].values()), got["after_rotation"]
    assert fleet.broker is not None
    async with FleetClient(fleet.broker.host, fleet.broker.port, CommandSigner(hmac_key=NOC_KEY)) as old:
        refused = await old.send(fleet.ids[0], "diag_store")
    assert (refused["outcome"], refused["reason"]) == ("rejected", "bad_signature"), refused
    assert max(fleet.per_gateway("key_rotation", "down")) == 1  # one command per gateway
    assert min(fleet.per_gateway("rollout", "up")) >= 1
    return got


def test_fleet_of_four_rolls_out_reverts_stops_targets_one_household_uploads_and_rotates(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with Fleet(4, tmp_path, rules=True) as fleet:
            await fleet.wait_online(timeout_s=120)
            # waves [gw-00] [gw-01 gw-02] [gw-03]: wave 2 fails 100 % > 50 %: stop, gw-03 untouched
            expected = {"gw-00": "confirmed", "gw-01": "reverted", "gw-02": "reverted", "gw-03": "skipped"}
            got = await run_and_check(
                fleet,
                {"gw-01", "gw-02"},
                waves="1,2,rest",
                max_failure_rate=0.5,
                expected=expected,
                away="gw-03",
            )
            assert got["rollout"].stopped and got["rollout"].reason.startswith("wave 2: failure rate 100%")

    asyncio.run(main())


@pytest.mark.long
def test_fleet_of_twenty_rolls_out_in_waves_with_reverts_targets_one_household_uploads_and_rotates(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with Fleet(20, tmp_path, rules=True) as fleet:
            await fleet.wait_online(timeout_s=240)
            bad = {"gw-18", "gw-19"}  # in the last wave: 2 of 17 (12 %) is below the 20 % threshold
            expected = {g: "reverted" if g in bad else "confirmed" for g in fleet.ids}
            got = await run_and_check(
                fleet, bad, waves="1,10%,rest", max_failure_rate=0.2, expected=expected, away="gw-07"
            )
            assert not got["rollout"].stopped and [len(w.gateways) for w in got["rollout"].waves] == [
                1,
                2,
                17,
            ]

    asyncio.run(main())
