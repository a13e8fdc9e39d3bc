"""A staged software-update rollout (`fleet rollout-update`, hil/platform/rollout.update_action) over
real `citynerve run` processes on one Mosquitto (hil/bench/fleet.py's Fleet with `[update]`).

The bundle is not a signed release (no release is built here; tests/release/test_update.py pushes
real signed releases to one gateway with the same `update_gateway`): every gateway takes its chunks
over MQTT, checks them against the signed chunk table and the whole hash, then refuses to apply it,
and says why. One gateway's disk budget is too small: it refuses at the start, before any chunk.
So the rollout shows the per-gateway report (final phase, reason, chunks) and the wave threshold:
with threshold 1 every wave runs; with 0.5 the first wave's failure stops it."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

from citynerve.hil.bench.fleet import NOC_KEY, Fleet
from citynerve.hil.platform.fleet_update import Bundle
from citynerve.hil.platform.rollout import parse_waves, rollout, update_action


def test_update_rollout_in_waves_reports_each_gateway_and_stops(tmp_path: Path) -> None:
    data = random.Random(15).randbytes(600 * 1024)  # 10 chunks of 64 KiB; 8 x 600 KB > 4 MiB
    bundle_file = tmp_path / "citynerve-9.0.0-test.tar.gz"
    bundle_file.write_bytes(data)

    async def scenario() -> None:
        fleet = Fleet(4, tmp_path / "fleet", update=True)
        fleet.update_budget["gw-03"] = 4 << 20  # the minimum: too small for this bundle
        async with fleet:
            await fleet.wait_online(timeout_s=120)
            assert fleet.client is not None and fleet.broker is not None
            bundle = Bundle.from_file(bundle_file)
            act = update_action(fleet.client, bundle, update_id="roll-1", timeout_s=120)
            report = await rollout(fleet.ids, act, waves=parse_waves("1,2,rest"), max_failure_rate=1.0)
            by_gw = {g.gateway: g for g in report.gateways}
            assert not report.stopped and [len(w.gateways) for w in report.waves] == [1, 2, 1]
            for gw in ("gw-00", "gw-01", "gw-02"):
                rep = by_gw[gw]
                assert (rep.outcome, rep.ok) == ("failed", False), rep
                assert "not a readable .tar.gz" in rep.detail, rep
                assert rep.info["update_id"] == "roll-1" and rep.info["chunks_sent"] >= 11, rep  # table + 10
            refused = by_gw["gw-03"]
            assert refused.outcome == "refused" and refused.detail.startswith("no_space:"), refused
            assert "disk_budget_bytes" in refused.detail and refused.info["chunks_sent"] == 0

            # the gateways' own record, on the events lane: each step of roll-1, ending failed
            def steps(gw: str) -> list[str]:
                assert fleet.platform is not None
                return [
                    e["attrs"]["phase"]
                    for e in fleet.platform.store.events(gw)
                    if e["kind"] == "software_update" and e["attrs"].get("update_id") == "roll-1"
                ]

            deadline = asyncio.get_running_loop().time() + 30
            while steps("gw-01")[-1:] != ["failed"]:
                assert asyncio.get_running_loop().time() < deadline, steps("gw-01")
                await asyncio.sleep(0.2)
            assert steps("gw-01")[0] == "receiving" and "verifying" in steps("gw-01")
            assert steps("gw-03") == []

            # the CLI, threshold 0.5, a new update id: wave 1 (gw-00) fails, the rest is skipped
            key = tmp_path / "noc.key"
            key.write_text(NOC_KEY.hex())
            key.chmod(0o600)
            cmd = [sys.executable, "-m", "citynerve.hil.platform", "fleet"]
            cmd += [
                "--broker",
                f"mqtt://{fleet.broker.host}:{fleet.broker.port}",
                "--hmac-key-file",
                str(key),
            ]
            cmd += ["rollout-update", "--bundle", str(bundle_file), "--gateways", ",".join(fleet.ids)]
            cmd += [
                "--waves",
                "1,rest",
                "--max-failure-rate",
                "0.5",
                "--update-id",
                "roll-2",
                "--wait",
                "120",
            ]
            done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=300)
            assert done.returncode == 1, done.stderr
            out = json.loads(done.stdout)
            assert out["stopped"] and out["reason"].startswith("wave 1: failure rate 100%"), out
            assert out["outcomes"] == {"failed": 1, "skipped": 3}, out
            assert out["update_id"] == "roll-2" and out["size"] == len(data)
            first = out["gateways"][0]
            assert (first["gateway"], first["outcome"], first["update_id"]) == ("gw-00", "failed", "roll-2")
            assert "wave 1: gw-00 failed" in done.stderr

    asyncio.run(scenario())
