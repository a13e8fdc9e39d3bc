"""Device profiles sent with a remote config (docs/fleet.md, "Profiles"), against a real
`citynerve run` process on Mosquitto (hil/bench/fleet.py's Fleet with one gateway): a patch carries
a new profile and a device using it (confirmed, the profile lands in the managed folder); a bad
profile is rejected with its key path, exactly as a profile file would be; a change to the profile
that fails health is reverted together with its config; `config history` and `config rollback`
restore the profiles with the config."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from citynerve.gateway.remoteconfig import ConfigHistory
from citynerve.gateway.remoteconfig.history import state_digest
from citynerve.gateway.remoteconfig.profiles import candidate
from citynerve.hil.bench.fleet import WATER_UNIT, Fleet
from tests.integration.test_run_fleet import until

LITE = {
    "id": "wm-lite",
    "family": "modbus",
    "description": "flow only (a profile the platform sends)",
    "poll_interval_s": 2,
    "points": {
        "flow_rate": {
            "table": "holding",
            "address": 0,
            "type": "float32",
            "word_order": "little",
            "unit": "m3/h",
        }
    },
}


def _device(bus: str, unit: int, profile: str, dev: str = "wm-1") -> dict[str, Any]:
    return {
        "id": dev,
        "bus": bus,
        "profile": profile,
        "address": unit,
        "poll_interval_s": 2,
        "location": {"address_code": "310106013007"},
    }


def test_candidate_merges_profiles_of_patches_and_takes_whole_sets_from_documents() -> None:
    current = '[gateway]\nid = "g"\n'
    text, profiles = candidate(
        current, {"a": "id = 'a'\n"}, json.dumps({"profiles": {"b": LITE}}).encode(), "patch"
    )
    assert text == current and set(profiles) == {"a", "b"}  # a profiles-only patch keeps the text as is
    assert tomllib.loads(profiles["b"])["points"]["flow_rate"]["address"] == 0
    _, profiles = candidate(current, profiles, b'{"profiles": {"a": null}}', "patch")
    assert set(profiles) == {"b"}
    doc = current + '[profiles.c]\nid = "c"\nfamily = "modbus"\n[profiles.c.points.x]\naddress = 1\n'
    text, profiles = candidate(current, {"a": "x"}, doc.encode(), "replace")
    assert set(profiles) == {"c"} and "profiles" not in tomllib.loads(text)
    assert candidate(current, {"a": "x"}, current.encode(), "replace")[1] == {"a": "x"}
    assert state_digest(current, {}) != state_digest(current, {"a": "x"})
    for bad in ({"../x": LITE}, {"b": 3}, {"b": "[x"}):
        try:
            candidate(current, {}, json.dumps({"profiles": bad}).encode(), "patch")
        except Exception as err:
            assert "profiles" in str(err)
        else:
            raise AssertionError(bad)


def test_profiles_travel_with_the_config_and_revert_and_roll_back_with_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Fleet(1, tmp_path) as fleet:
            await fleet.wait_online(timeout_s=120)
            assert fleet.client is not None
            gw, cfg = "gw-00", fleet.config_path("gw-00")
            hist = ConfigHistory(cfg)
            original = cfg.read_text()

            # 1. a new profile and the meter moved onto it: confirmed, the profile is managed
            patch = {"profiles": {"wm-lite": LITE}, "devices": [_device("mb", WATER_UNIT, "wm-lite")]}
            out = await fleet.client.apply_config(
                gw, json.dumps(patch), version="p1", mode="patch", confirm_s=20
            )
            assert out["outcome"] == "confirmed", out
            assert (hist.profile_dir / "wm-lite.toml").is_file()
            digest = state_digest(cfg.read_text(), hist.read_profiles())
            assert hist.current() == {"version": "p1", "sha256": digest}

            def running() -> dict[str, Any]:
                return (fleet.status_doc(gw).get("gateway") or {}).get("config") or {}

            await until(lambda: running().get("sha256") == digest, 30)

            # 2. a broken profile: rejected with every issue and its key path, nothing changes
            broken = {**LITE, "points": {"flow_rate": {"table": "holding", "address": -4, "type": "float32"}}}
            out = await fleet.client.apply_config(
                gw, json.dumps({"profiles": {"wm-lite": broken}}), version="p2", mode="patch", confirm_s=20
            )
            assert out["outcome"] == "rejected", out
            detail = out["answer"]["detail"]
            assert "profiles.wm-lite.points.flow_rate.address" in detail, detail
            assert tomllib.loads(hist.read_profiles()["wm-lite"]) == LITE

            # 3. a valid profile change whose config fails health: reverted, profile and all
            lite2 = {**LITE, "description": "v3"}
            silent = {"id": "mb-silent", "protocol": "modbus_tcp", "host": "127.0.0.1"}
            silent.update({"port": fleet.silent_port, "timeout_s": 0.3, "min_poll_interval_s": 0.5})
            mb = {"id": "mb", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": fleet.modbus_port}
            mb.update({"timeout_s": 0.3, "min_poll_interval_s": 0.5})
            bad = {
                "profiles": {"wm-lite": lite2},
                "buses": [mb, silent],
                "devices": [_device("mb", WATER_UNIT, "wm-lite"), _device("mb-silent", 9, "wm-lite", "wm-9")],
            }
            out = await fleet.client.apply_config(
                gw, json.dumps(bad), version="p3", mode="patch", confirm_s=6
            )
            assert out["outcome"] == "reverted", out
            assert tomllib.loads(hist.read_profiles()["wm-lite"]) == LITE
            assert hist.current() == {"version": "p1", "sha256": digest}

            # 4. local history and rollback: back to the original config, without managed profiles
            cli = [sys.executable, "-m", "citynerve.gateway.cli", "config"]
            shown = await asyncio.to_thread(
                subprocess.run, [*cli, "history", "-c", str(cfg), "--json"], capture_output=True, text=True
            )
            assert shown.returncode == 0, shown.stderr
            snaps = json.loads(shown.stdout)["snapshots"]
            assert [s["version"] for s in snaps][:1] == ["local"] and any(s.get("profiles") for s in snaps)
            back = await asyncio.to_thread(
                subprocess.run,
                [*cli, "rollback", "local", "-c", str(cfg), "--json"],
                capture_output=True,
                text=True,
            )
            assert back.returncode == 0, back.stderr + back.stdout
            assert cfg.read_text() == original and not hist.profile_dir.exists()
            assert json.loads(back.stdout)["reload"] == "reloaded", back.stdout
            await until(lambda: running().get("version") == "local", 30)
            # and forward again: the snapshot of p1 brings its profile back
            fwd = await asyncio.to_thread(
                subprocess.run,
                [*cli, "rollback", "p1", "-c", str(cfg), "--json"],
                capture_output=True,
                text=True,
            )
            assert fwd.returncode == 0, fwd.stderr + fwd.stdout
            assert tomllib.loads(hist.read_profiles()["wm-lite"]) == LITE
            await until(lambda: running().get("sha256") == digest, 30)

    asyncio.run(scenario())


def test_a_crash_looping_config_is_put_back_with_its_profiles(tmp_path: Path) -> None:
    """The revert before the config is even loaded (MAX_PENDING_STARTS starts without a verdict)
    restores the managed profiles of the snapshot too; a tampered profile snapshot is refused."""
    from citynerve.gateway.remoteconfig import prepare_start
    from citynerve.gateway.remoteconfig.manager import MAX_PENDING_STARTS

    config = tmp_path / "gw.toml"
    config.write_text("old = 1\n")
    hist = ConfigHistory(config)
    hist.write_state("old = 1\n", {"a": "id = 'a'\n"})
    snap = hist.snapshot("old = 1\n", "v1")
    assert snap.profiles and snap.sha256 == state_digest("old = 1\n", {"a": "id = 'a'\n"})
    hist.set_pending({"version": "v2", "sha256": "x", "snapshot": snap.seq, "previous": {"version": "v1"}})
    hist.write_state("new = 1\n", {"b": "id = 'b'\n"})
    assert sorted(p.name for p in hist.profile_dir.iterdir()) == ["b.toml"]
    for _ in range(MAX_PENDING_STARTS):
        prepare_start(config)
    assert "reverted" in str(prepare_start(config))
    assert config.read_text() == "old = 1\n" and hist.read_profiles() == {"a": "id = 'a'\n"}
    assert hist.current() == {"version": "v1", "sha256": snap.sha256}
    assert (hist.profile_dir.stat().st_mode & 0o777) == 0o700
    (hist.dir / snap.profiles).write_text('{"a": "id = \'evil\'\\n"}')
    try:
        hist.snapshot_state(snap)
    except Exception as err:
        assert "hash" in str(err)
    else:
        raise AssertionError("a tampered profile snapshot was accepted")
