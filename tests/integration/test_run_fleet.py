"""Fleet operations on a real `citynerve run`, a real Mosquitto and the reference platform: operator
controls from the platform (signed, per-key permissions) and from the local CLI, durable across a
restart, audited upstream, shown in `citynerve status`; maintenance-marked and acknowledged alarms;
a chunked log tail; a service restart on request."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.control import ask
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer, free_port
from citynerve.hil.platform.fleet import FleetClient
from tests.integration.conftest import GatewayProcess, gateway_config
from tests.integration.test_run_web import get

GW = "gw-test"
OPS_KEY = bytes.fromhex("33" * 32)
CENTRE_KEY = bytes.fromhex("44" * 32)
GHOST_BUS = (
    '\n[[buses]]\nid = "tcp-silent"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    "timeout_s = 0.3\nmin_poll_interval_s = 0.05\n"
)
GHOST = (
    '\n[[devices]]\nid = "ghost"\nbus = "tcp-silent"\nprofile = "test-counter"\naddress = 77\n'
    'enabled = {on}\nlocation = {{ address_code = "310106013007" }}\n'
)


def write_config(
    tmp: Path, port: int, broker: MosquittoBroker, silent: int, web_port: int, *, ghost_on: bool
) -> Path:
    config = gateway_config(tmp, port, buses=1, units=3)
    for name, key in (("ops.key", OPS_KEY), ("centre.key", CENTRE_KEY)):
        (tmp / name).write_text(key.hex())
        (tmp / name).chmod(0o600)
    text = config.read_text() + GHOST_BUS.format(port=silent) + GHOST.format(on=str(ghost_on).lower())
    text += f'\n[web]\nenabled = true\nbind = "127.0.0.1"\nport = {web_port}\n'
    text += f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
    text += "[upstream.commands]\nenabled = true\n"
    text += f'[[upstream.commands.keys]]\nid = "district-ops"\nhmac_key_file = "{tmp / "ops.key"}"\n'
    text += 'classes = ["read", "operate"]\n'
    text += f'[[upstream.commands.keys]]\nid = "ops-centre"\nhmac_key_file = "{tmp / "centre.key"}"\n'
    text += 'classes = ["read", "operate", "configure"]\n'
    config.write_text(text)
    return config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def status(config: Path) -> dict[str, Any]:
    out = cli(config, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def until(pred: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(pred):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def socket_up(tmp: Path) -> bool:
    try:
        asyncio.run(ask(tmp / "var" / "gw.sock", "ping", timeout_s=2.0))
    except Exception:
        return False
    return True


def test_operator_controls_permissions_diagnostics_and_restart(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    # A peer that accepts connections (the kernel's backlog) and never answers: the ghost times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    with silent, MosquittoBroker() as broker:
        web_port = free_port()
        config = write_config(
            tmp_path, modbus_peer, broker, silent.getsockname()[1], web_port, ghost_on=False
        )

        async def scenario() -> None:
            async with (
                PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp_path / "p.db") as platform,
                FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=OPS_KEY), key_id="district-ops"
                ) as ops,
                FleetClient(broker.host, broker.port, CommandSigner(hmac_key=CENTRE_KEY)) as centre,
            ):
                gw = gateway_process(config)
                gw.start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: (status(config).get("uplink") or {}).get("state") == "connected")

                # a district operator's key: operate yes, configure no, and the answer says why
                r = await ops.send(
                    GW, "set_maintenance", {"device_id": "ghost", "for_s": 3600, "reason": "swap"}
                )
                assert r["outcome"] == "ok", r
                r = await ops.send(GW, "set_log_level", {"level": "debug", "for_s": 30})
                assert (r["outcome"], r["reason"]) == ("rejected", "not_permitted")
                assert "needs the configure permission; key 'district-ops'" in r["detail"]
                r = await centre.send(GW, "set_log_level", {"level": "debug", "for_s": 30})
                assert r["outcome"] == "ok", r

                # the local CLI, through the control socket
                out = cli(config, "operator", "away", "d0-2", "--for", "2h")
                assert out.returncode == 0, out.stderr
                bad = cli(config, "operator", "maintenance", "d0-1")  # no end time
                assert bad.returncode != 0

                # the ghost (no such unit on the bus) starts polling: its offline alarm is raised
                # while in maintenance, so it is marked, here and upstream
                config.write_text(config.read_text().replace("enabled = false", "enabled = true"))
                await asyncio.to_thread(asyncio.run, ask(tmp_path / "var" / "gw.sock", "reload"))

                def ghost_alarm() -> dict[str, Any] | None:
                    alarms = status(config)["alarms"]
                    return next((a for a in alarms if a["device_id"] == "ghost"), None)

                await until(lambda: ghost_alarm() is not None, 90)
                alarm = ghost_alarm()
                assert alarm is not None and alarm["maintenance"] is True
                r = await ops.send(GW, "ack_alarm", {"device_id": "ghost", "kind": alarm["kind"]})
                assert r["outcome"] == "ok", r
                r = await ops.send(GW, "ack_alarm", {"device_id": "d0-1", "kind": "smoke"})
                assert r["reason"] == "unknown_alarm"

                st = status(config)
                assert [w["target"] for w in st["operator"]["away"]] == ["d0-2"]
                assert (
                    st["operator"]["away"][0]["by"].endswith("(local uid 0 pid ")
                    or "(local uid " in st["operator"]["away"][0]["by"]
                )
                assert st["operator"]["maintenance"][0]["by"] == "platform key district-ops"
                acked = next(a for a in st["alarms"] if a["device_id"] == "ghost")
                assert acked["acked_by"] == "platform key district-ops"
                # the status page's data
                _, _, page = get(f"http://127.0.0.1:{web_port}/api/status")
                page_state = json.loads(page)
                assert [w["target"] for w in page_state["operator"]["maintenance"]] == ["ghost"]
                assert next(a for a in page_state["alarms"] if a["device_id"] == "ghost")["acked_by"]
                text = cli(config, "status").stdout
                assert "operator: maintenance ghost (swap)" in text and "operator: away d0-2" in text
                assert "(maintenance)" in text and "(acknowledged" in text, text

                # audited upstream: operator events with who / what / until; the alarm flagged
                def upstream() -> list[dict[str, Any]]:
                    return platform.store.events(GW)

                await until(lambda: len([e for e in upstream() if e["kind"] == "operator"]) >= 3)
                audits = [e for e in upstream() if e["kind"] == "operator"]
                whats = {(e["device_id"], e["attrs"]["what"]) for e in audits}
                assert {("ghost", "maintenance"), ("d0-2", "away"), ("ghost", "ack")} <= whats
                assert all("who" in e["attrs"] for e in audits)
                offline = next(e for e in upstream() if e["device_id"] == "ghost" and e["kind"] != "operator")
                assert offline["attrs"]["maintenance"]["by"] == "platform key district-ops"

                # diagnostics and the chunked log tail (hash checked by the client)
                r = await ops.send(GW, "diag_errors")
                assert "ghost" in [d["id"] for d in r["result"]["devices"]]
                r = await ops.send(GW, "diag_uplink", {"probe": True})  # from the gateway, to its broker
                assert r["result"]["state"]["state"] == "connected"
                assert [p["ok"] for p in r["result"]["probe"]] == [True], r["result"]["probe"]
                r = await ops.send(GW, "diag_buses")
                assert {b["id"] for b in r["result"]["buses"]} == {"tcp-0", "tcp-silent"}
                r = await ops.send(GW, "diag_store")
                assert r["outcome"] == "ok" and "lanes" in r["result"]
                final, data = await ops.fetch_upload(GW, "log_tail", {"max_bytes": 30_000})
                assert final["outcome"] == "ok" and b"operator maintenance on ghost" in data

                # durable: a restart keeps every flag and the acknowledgement
                assert gw.kill(signal.SIGTERM) == 0
                gw2 = gateway_process(config)
                gw2.start()
                await until(lambda: socket_up(tmp_path))
                st = status(config)
                assert [w["target"] for w in st["operator"]["maintenance"]] == ["ghost"]
                assert 0 < st["operator"]["maintenance"][0]["remaining_s"] <= 3600
                assert [w["target"] for w in st["operator"]["away"]] == ["d0-2"]
                assert next(a for a in st["alarms"] if a["device_id"] == "ghost")["acked_by"]

                # the platform's fleet tool: a household back home, a log file fetched
                def fleet(*args: str) -> subprocess.CompletedProcess[str]:
                    base = ["--broker", f"mqtt://{broker.host}:{broker.port}", "--gateway", GW]
                    base += ["--hmac-key-file", str(tmp_path / "ops.key"), "--key-id", "district-ops"]
                    return subprocess.run(
                        [sys.executable, "-m", "citynerve.hil.platform", "fleet", *base, *args],
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )

                await until(lambda: (status(config).get("uplink") or {}).get("state") == "connected")
                out = await asyncio.to_thread(fleet, "back", "d0-2")
                assert out.returncode == 0 and json.loads(out.stdout)["outcome"] == "ok", out
                assert status(config)["operator"]["away"] == []
                out = await asyncio.to_thread(fleet, "logs", "--out", str(tmp_path / "tail.log"))
                assert out.returncode == 0, out
                assert b"operator back on d0-2" in (tmp_path / "tail.log").read_bytes()
                out = await asyncio.to_thread(fleet, "log-level", "debug")
                assert out.returncode == 1 and json.loads(out.stdout)["reason"] == "not_permitted"
                # the technician ends the maintenance by hand on site (nothing history-based to reset)
                out = cli(config, "operator", "maintenance", "ghost", "--end", "--json")
                assert out.returncode == 0, out.stderr
                assert json.loads(out.stdout) == {"maintenance_end": "ghost", "reset": []}
                assert status(config)["operator"]["maintenance"] == []

                # restart on request: answered, then the process exits for the service manager
                await until(lambda: (status(config).get("uplink") or {}).get("state") == "connected")
                r = await ops.send(GW, "restart_service")
                assert r["outcome"] == "ok" and r["result"]["exit_code"] == 75
                assert gw2.proc is not None
                assert await asyncio.to_thread(gw2.proc.wait, 60) == 75

        asyncio.run(scenario())


def test_away_reaches_the_rules_of_that_household_only(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """A household marked away before its meter goes silent: its suppress_when_away rule stays
    quiet while the neighbour's raises; back home, it raises within seconds. Across a restart."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    with silent:
        config = gateway_config(tmp_path, modbus_peer, buses=1, units=1)
        base = config.read_text() + GHOST_BUS.format(port=silent.getsockname()[1])
        for address, name in ((1, "ghost"), (2, "ghost2")):
            ghost = GHOST.format(on="@ON@").replace('id = "ghost"', f'id = "{name}"')
            base += ghost.replace("address = 77", f"address = {address}")
        base += (
            '\n[rules]\n[[rules.rules]]\nid = "silent_household"\nkind = "offline"\n'
            'suppress_when_away = true\nselect = { devices = ["ghost", "ghost2"] }\n'
        )
        config.write_text(base.replace("@ON@", "false"))
        gw = gateway_process(config)
        gw.start()
        gw.wait_for(lambda: socket_up(tmp_path))
        out = cli(config, "operator", "away", "ghost", "--for", "3d")
        assert out.returncode == 0, out.stderr
        assert gw.kill(signal.SIGTERM) == 0

        config.write_text(base.replace("@ON@", "true"))  # both meters now polled, and both silent
        gw2 = gateway_process(config)
        gw2.start()
        gw2.wait_for(lambda: socket_up(tmp_path))

        def raised() -> set[str]:
            return {a["device_id"] for a in status(config)["alarms"] if a["rule"] == "silent_household"}

        def offline() -> set[str]:
            return {a["device_id"] for a in status(config)["alarms"] if a["kind"] == "device_offline"}

        # the bus sees both silent; only the away household's rule stays quiet
        gw2.wait_for(lambda: "ghost2" in raised() and {"ghost", "ghost2"} <= offline(), 60)
        assert raised() == {"ghost2"}
        assert [w["target"] for w in status(config)["operator"]["away"]] == ["ghost"]
        out = cli(config, "operator", "back", "ghost")
        assert out.returncode == 0, out.stderr
        gw2.wait_for(lambda: raised() == {"ghost", "ghost2"}, 30)
