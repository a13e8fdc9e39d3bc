"""Fleet benchmark: real gateways on one Mosquitto (hil/bench/fleet_harness.py: N `citynerve run`
processes, one simulated building, the reference platform). The scenario of deliverable 8, timed
and counted:

1. a staged config rollout (waves, failure-rate threshold) where the last `--bad` gateways get a
   config that fails health (their bus moved to a peer that never answers) and revert by themselves;
2. an away flag for one household reaching that gateway's rules only (a meter error raises an
   alarm on every other gateway, not on that one until the household is back);
3. a log upload (the chunked, hash-checked log tail of a gateway that reverted);
4. a rotation of the command key of the whole fleet (then every gateway answers the new key only).

Prints the times, the reverts and the MQTT messages per gateway for the rollout and for the key
rotation (gateway -> platform "up", platform -> gateway "down").

    python -m citynerve.hil.bench.fleet [--gateways 20] [--bad 2] [--waves 1,10%,rest] [--confirm-s 10]
        [--max-failure-rate 0.2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from citynerve.hil.bench.fleet_harness import CONFIRM_S, NOC_KEY, WATER_UNIT, Fleet

__all__ = ["CONFIRM_S", "NOC_KEY", "WATER_UNIT", "Fleet", "bench", "scenario"]

NEW_KEY = bytes.fromhex("a7" * 32)


async def scenario(
    fleet: Fleet, bad: set[str], *, waves: str, max_failure_rate: float, confirm_s: float, away: str
) -> dict[str, Any]:
    """Steps 1-4 on a running fleet; returns what each gave (the tests assert on it)."""
    assert fleet.client is not None
    out: dict[str, Any] = {}
    out["rollout"] = await fleet.rollout_config(
        bad, waves=waves, max_failure_rate=max_failure_rate, confirm_s=confirm_s
    )
    out["away"] = await fleet.away_reaches_rules(away)
    reverted = sorted(g.gateway for g in out["rollout"].gateways if g.outcome == "reverted")
    source = reverted[0] if reverted else fleet.ids[0]
    t0 = time.monotonic()
    async with fleet.counting("log_upload"):
        final, data = await fleet.client.fetch_upload(source, "log_tail", {"max_bytes": 65536})
    out["log"] = {"gateway": source, "final": final, "data": data, "seconds": time.monotonic() - t0}
    t0 = time.monotonic()
    out["rotation"] = await fleet.rotate_keys(NEW_KEY, overlap_s=0)
    answers = await asyncio.gather(*(fleet.client.send(g, "diag_store") for g in fleet.ids))
    out["rotation_s"] = time.monotonic() - t0
    out["after_rotation"] = dict(zip(fleet.ids, answers, strict=True))
    return out


def _median(xs: list[int]) -> float:
    return statistics.median(xs) if xs else 0.0


async def bench(
    n: int, bad_count: int, waves: str, max_failure_rate: float, confirm_s: float = CONFIRM_S
) -> dict[str, Any]:
    async with Fleet(n, rules=True) as fleet:
        online_s = await fleet.wait_online(timeout_s=60 + 5 * n)
        bad = set(fleet.ids[-bad_count:]) if bad_count else set()
        away = fleet.ids[1] if n > 1 else fleet.ids[0]
        got = await scenario(
            fleet, bad, waves=waves, max_failure_rate=max_failure_rate, confirm_s=confirm_s, away=away
        )
        report = got["rollout"]
        per_gw = sorted(g.seconds for g in report.gateways if g.wave is not None)
        rotated = sum(1 for a in got["rotation"].values() if a.get("outcome") == "ok")
        answered = sum(1 for a in got["after_rotation"].values() if a.get("outcome") == "ok")
        msgs = {
            phase: {
                "up_median": _median(fleet.per_gateway(phase, "up")),
                "up_max": max(fleet.per_gateway(phase, "up")),
                "down_median": _median(fleet.per_gateway(phase, "down")),
            }
            for phase in ("rollout", "key_rotation")
        }
        log = got["log"]
        return {
            "gateways": n,
            "bad_configs": len(bad),
            "waves": waves,
            "max_failure_rate": max_failure_rate,
            "confirm_s": confirm_s,
            "fleet_online_s": round(online_s, 2),
            "rollout_s": round(report.seconds, 2),
            "wave_s": [round(w.seconds, 2) for w in report.waves],
            "outcomes": report.outcomes,
            "reverts": report.outcomes.get("reverted", 0),
            "stopped": report.stopped,
            "per_gateway_s_median": round(statistics.median(per_gw), 2) if per_gw else None,
            "per_gateway_s_max": round(max(per_gw), 2) if per_gw else None,
            "messages_rollout_up_per_gateway_median": msgs["rollout"]["up_median"],
            "messages_rollout_up_per_gateway_max": msgs["rollout"]["up_max"],
            "messages_rollout_down_per_gateway_median": msgs["rollout"]["down_median"],
            "away_gateway": away,
            "away_raised_while_away": got["away"]["raised_while_away"],
            "away_others_raised_s": got["away"]["others_raised_s"],
            "away_back_raised_s": got["away"]["target_raised_when_back_s"],
            "log_upload_bytes": len(log["data"]),
            "log_upload_s": round(log["seconds"], 2),
            "log_upload_gateway": log["gateway"],
            "log_upload_messages_up": fleet.counts[("log_upload", log["gateway"], "up")],
            "log_upload_messages_down": fleet.counts[("log_upload", log["gateway"], "down")],
            "key_rotation_s": round(got["rotation_s"], 2),
            "key_rotation_ok": rotated,
            "answering_new_key": answered,
            "messages_key_rotation_up_per_gateway_median": msgs["key_rotation"]["up_median"],
            "messages_key_rotation_down_per_gateway_median": msgs["key_rotation"]["down_median"],
            "platform": "reference platform (hil/platform) and Mosquitto on loopback, one machine",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--bad", type=int, default=2, help="gateways (the last ones) given a failing config")
    parser.add_argument("--waves", default="1,10%,rest")
    parser.add_argument("--max-failure-rate", type=float, default=0.2)
    parser.add_argument("--confirm-s", type=float, default=CONFIRM_S, help="health check window")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.gateways, args.bad, args.waves, args.max_failure_rate, args.confirm_s))
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
