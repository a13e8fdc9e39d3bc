"""A fleet of real `citynerve run` processes on one Mosquitto (hil/bench/fleet.py; 4 gateways here for
the CI budget, `python -m citynerve.hil.bench.fleet --gateways 20` runs 20, docs/benchmarks.md):
a staged config rollout where some gateways get a config that fails health and revert by
themselves, and a wave above the failure rate stops the rollout; an away flag reaching the right
gateway only; a log upload."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

from citynerve.hil.bench.fleet import Fleet
from tests.integration.test_run_fleet import until


def test_staged_rollout_reverts_stops_and_targets_one_gateway(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Fleet(4, tmp_path) as fleet:
            await fleet.wait_online(timeout_s=120)
            originals = {g: fleet.config_path(g).read_text() for g in fleet.ids}
            bad = {"gw-01", "gw-02"}
            # waves: [gw-00] [gw-01 gw-02] [gw-03]; wave 2 fails 100 %: stop, gw-03 is never touched
            report = await fleet.rollout_config(bad, waves="1,2,rest", max_failure_rate=0.5)
            by_gw = {g.gateway: g for g in report.gateways}
            assert {g: r.outcome for g, r in by_gw.items()} == {
                "gw-00": "confirmed",
                "gw-01": "reverted",
                "gw-02": "reverted",
                "gw-03": "skipped",
            }, report.to_dict()
            assert report.stopped and report.reason.startswith("wave 2: failure rate 100%")
            assert "devices faulted: wm-9" in by_gw["gw-02"].detail, by_gw["gw-02"].detail
            devices = [d["id"] for d in tomllib.loads(fleet.config_path("gw-00").read_text())["devices"]]
            assert devices == ["wm-1", "wm-2"]
            for gw in ("gw-01", "gw-02", "gw-03"):
                assert fleet.config_path(gw).read_text() == originals[gw], gw  # reverted or untouched

            def versions() -> dict[str, str]:
                return {
                    g: ((fleet.status_doc(g).get("gateway") or {}).get("config") or {}).get("version")
                    for g in fleet.ids
                }

            want = {"gw-00": "v2", "gw-01": "local", "gw-02": "local", "gw-03": "local"}
            await until(lambda: versions() == want, 30)

            # an away flag reaches gw-01's household only, audited by gw-01
            assert fleet.client is not None and fleet.platform is not None
            r = await fleet.client.send("gw-01", "set_away", {"device_id": "wm-1", "for_s": 3600})
            assert r["outcome"] == "ok", r

            def away(gw: str) -> list[str]:
                op = (fleet.status_doc(gw).get("gateway") or {}).get("operator") or {}
                return [w["target"] for w in op.get("away", [])]

            await until(lambda: away("gw-01") == ["wm-1"], 30)
            assert all(away(g) == [] for g in fleet.ids if g != "gw-01")

            def audits(gw: str) -> list[dict[str, Any]]:
                assert fleet.platform is not None
                return [e for e in fleet.platform.store.events(gw) if e["kind"] == "operator"]

            await until(lambda: len(audits("gw-01")) == 1, 30)
            assert all(not audits(g) for g in fleet.ids if g != "gw-01")

            # a log upload from a gateway that reverted: its log says why
            final, data = await fleet.client.fetch_upload("gw-02", "log_tail", {"max_bytes": 65536})
            assert final["outcome"] == "ok" and b"reverting" in data

    asyncio.run(scenario())
