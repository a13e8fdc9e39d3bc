"""`reload` on a running gateway: changed buses restart, others keep polling, nothing buffered is lost."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.gateway.config import load_config
from citynerve.gateway.control import ControlError, ask
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.store import read_stats
from citynerve.gateway.uplink.commands import Caller
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.integration.conftest import GatewayProcess, devices_online, gateway_config


def status(sock: Path) -> dict:
    return asyncio.run(ask(sock, "status"))


def test_reload_adds_a_device_and_keeps_the_outbox(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    config = gateway_config(tmp_path, modbus_peer, buses=2, units=2)
    sock, db = tmp_path / "var" / "gw.sock", tmp_path / "var" / "gw.db"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: devices_online(sock) == 4)
    before = status(sock)
    polls_tcp0 = before["buses"][0]["counters"]["transactions"]

    # A broken edit is refused with every issue; the gateway keeps running as it was.
    good = config.read_text()
    config.write_text(good + '\n[[devices]]\nid = "bad"\nbus = "nope"\n')
    with pytest.raises(ControlError) as info:
        asyncio.run(ask(sock, "reload"))
    assert info.value.type == "ConfigError", info.value.message
    assert "devices[4] (id 'bad').bus" in info.value.message
    # `citynerve config reload` (the unit's ExecReload) checks the file first: exit 2, every issue.
    cli = reload_cli(config)
    assert cli.returncode == 2, cli.stderr
    assert "devices[4] (id 'bad').bus" in cli.stderr

    config.write_text(
        good
        + '\n[[devices]]\nid = "d1-9"\nbus = "tcp-1"\nprofile = "test-counter"\naddress = 9\n'
        + 'location = { address_code = "310106013007" }\n'
    )
    rows_before = sum(lane.rows for lane in read_stats(db).lanes)
    cli = reload_cli(config, "--json")
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["outcome"] == "reloaded"
    assert report["detail"] == {"changed": ["tcp-1"], "added": [], "removed": [], "restart_needed_for": []}
    gw.wait_for(lambda: status(sock)["devices_online"] == 5)
    after = status(sock)
    # tcp-0 was not touched: its owner (and counters) kept going.
    assert after["buses"][0]["counters"]["transactions"] > polls_tcp0
    assert assert_rows_kept(db, rows_before)
    # A change to [store] applies only at a start: exit 3 names the section to restart for.
    config.write_text(config.read_text().replace("commit_interval_ms = 20", "commit_interval_ms = 30"))
    cli = reload_cli(config)
    assert cli.returncode == 3, (cli.stdout, cli.stderr)
    assert "store" in cli.stderr and "systemctl restart citynerve" in cli.stderr
    assert gw.kill(signal.SIGTERM) == 0
    # With no gateway running, `systemctl reload` must not report success.
    cli = reload_cli(config)
    assert cli.returncode == 1 and "no gateway is running" in cli.stderr


def reload_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "reload", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def assert_rows_kept(db: Path, rows_before: int) -> bool:
    return sum(lane.rows for lane in read_stats(db).lanes) >= rows_before


def _destinations(*items: tuple[str, str]) -> str:
    return "".join(f'\n[[upstream]]\nid = "{d}"\nbrokers = ["{url}"]\n' for d, url in items)


@pytest.mark.slow
async def test_a_change_to_a_later_destination_gets_new_uplinks(short_dir: Path) -> None:
    """Removing, renaming or re-pointing the second `[[upstream]]` is a change to `upstream`, locally
    and from the platform: before, reload compared only the first destination, so a removed one
    kept running and kept its outbox backlog, and a renamed one never started."""
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    try:
        async with ModbusBuilding() as building:
            path = short_dir / "gateway.toml"
            base = gateway_toml(*building.endpoint, rules=False)
            dead = "mqtt://127.0.0.1:9"  # nothing listens: scada's backlog grows
            both = base + _destinations(("city", broker.url), ("scada", dead))
            path.write_text(both)
            async with run_gateway(load_config(path)) as gw:
                assert gw.outbox is not None and gw.remote_config is not None
                assert (await gw.reload())["restart_needed_for"] == []  # the same file: nothing
                for edited in (
                    _destinations(("city", broker.url)),  # removed
                    _destinations(("city", broker.url), ("scada2", dead)),  # renamed
                    _destinations(("city", broker.url), ("scada", broker.url)),  # re-pointed
                ):
                    path.write_text(base + edited)
                    assert (await gw.reload())["restart_needed_for"] == ["upstream"], edited
                path.write_text(both)
                assert (await gw.reload())["restart_needed_for"] == []  # what runs: none was applied
                await wait_for(lambda: _backlog(gw, "scada"), 15.0)

                # The platform removes scada: new uplinks, scada's backlog no longer held.
                await _apply(gw, base + _destinations(("city", broker.url)), "v2")
                assert [u.destination for u in gw.uplinks] == ["city"]
                assert list(await gw.outbox.destination_stats()) == ["city"]
                # ... then adds it back under a new name on the live broker: it starts and delivers.
                await _apply(gw, base + _destinations(("city", broker.url), ("scada2", broker.url)), "v3")
                assert [u.destination for u in gw.uplinks] == ["city", "scada2"]
                await wait_for(lambda: gw.destination_states()["scada2"]["connected"], 15.0)
    finally:
        broker.close()


async def _backlog(gw: Gateway, destination: str) -> bool:
    assert gw.outbox is not None
    stats = await gw.outbox.destination_stats()
    return destination in stats and stats[destination]["backlog"]["telemetry"] > 0


async def _apply(gw: Gateway, document: str, version: str) -> None:
    """`config_apply` as the platform sends it; waits for its verdict (confirmed)."""
    remote = gw.remote_config
    assert remote is not None
    args = {"version": version, "document": document, "sha256": hashlib.sha256(document.encode()).hexdigest()}
    answer = await remote.actions()["config_apply"].handler(args, Caller("platform", f"c-{version}"))
    assert answer["state"] == "pending"
    # Applied as a change of the uplinks (not "hot": the running uplinks left as they were).
    await wait_for(lambda: (remote.pending or {}).get("applied") == "uplink", 10.0)
    await wait_for(lambda: remote.last is not None and remote.last["version"] == version, 30.0)
    assert remote.last is not None and remote.last["outcome"] == "confirmed", remote.last


async def test_a_reload_with_rule_packs_restarts_only_for_a_change(short_dir: Path) -> None:
    """The same file with rule packs is no change to `[rules]` (two loads of a pack used to compare
    unequal: every reload and remote config change with packs restarted the service); a pack's
    param changed is one."""
    async with ModbusBuilding() as building:
        path = short_dir / "gateway.toml"
        text = gateway_toml(*building.endpoint, rules=True)
        path.write_text(text)
        async with run_gateway(load_config(path)) as gw:
            assert (await gw.reload())["restart_needed_for"] == []
            path.write_text(
                text.replace(
                    'points = { smoke = "smoke_alarm" }',
                    'params = { fault_hold_s = 90 }\npoints = { smoke = "smoke_alarm" }',
                )
            )
            assert (await gw.reload())["restart_needed_for"] == ["rules"]


async def test_a_reload_reports_the_sections_read_only_at_start(short_dir: Path) -> None:
    """[log], [security] and [update] are read once at start (the log setup, the secret-file
    switches, the update handler). Reload now reports them; [update] was compared nowhere, so a
    remote config changing it was applied as `hot` and ignored until the next restart."""
    async with ModbusBuilding() as building:
        path = short_dir / "gateway.toml"
        text = gateway_toml(*building.endpoint, rules=False)
        path.write_text(text)
        async with run_gateway(load_config(path)) as gw:
            assert (await gw.reload())["restart_needed_for"] == []
            for extra, section in (
                ('\n[log]\nlevel = "debug"\n', "log"),
                ("\n[security]\nallow_insecure_secret_files = true\n", "security"),
                (f'\n[update]\nroot = "{short_dir}"\nservice = "process"\n', "update"),
            ):
                path.write_text(text + extra)
                assert section in (await gw.reload())["restart_needed_for"], section
                path.write_text(text)
                await gw.reload()


async def test_a_reload_that_needs_a_restart_keeps_what_runs(short_dir: Path) -> None:
    """A reload that names sections for a restart leaves them as they run: status shows what is in
    effect, the same file asks for the restart again, the running file asks for nothing, and a
    remote config carrying such a change restarts. The new sections used to be kept in memory:
    status showed the new gateway id, a second reload answered that nothing needed a restart, and
    a remote config with the change was applied as `hot`, never taking effect."""
    async with ModbusBuilding() as building:
        path = short_dir / "gateway.toml"
        text = gateway_toml(*building.endpoint, rules=False)
        store = text.replace('synchronous = "normal"', 'synchronous = "normal"\ncommit_interval_ms = 40')
        edited = store.replace('id = "gw-test-0001"', 'id = "gw-test-0002"')
        path.write_text(text)
        async with run_gateway(load_config(path)) as gw:
            sock = Path(gw.config.control.socket)
            path.write_text(edited)
            assert (await ask(sock, "reload"))["restart_needed_for"] == ["store", "gateway"]
            assert (await ask(sock, "status"))["gateway_id"] == "gw-test-0001"
            assert gw.config.store.commit_interval_ms == 5000  # what the writer runs with
            assert (await ask(sock, "reload"))["restart_needed_for"] == ["store", "gateway"]
            path.write_text(text)
            assert (await ask(sock, "reload"))["restart_needed_for"] == []
            path.write_text(store)
            assert (await ask(sock, "reload"))["restart_needed_for"] == ["store"]
            # The platform sends the [store] change with a bus timeout: a restart, not `hot`.
            document = store.replace("timeout_s = 0.3", "timeout_s = 0.4")
            remote = gw.remote_config
            assert remote is not None
            sha = hashlib.sha256(document.encode()).hexdigest()
            args = {"version": "v2", "document": document, "sha256": sha}
            answer = await remote.actions()["config_apply"].handler(args, Caller("platform", "c-v2"))
            assert answer["state"] == "pending"
            await wait_for(lambda: _restart_or_applied(gw), 15.0)
            assert gw.restart_requested, remote.pending


def _restart_or_applied(gw: Gateway) -> bool:
    assert gw.remote_config is not None
    return gw.restart_requested or "applied" in (gw.remote_config.pending or {})
