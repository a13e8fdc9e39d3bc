"""Reloading a real `citynerve run`: by SIGHUP, several reloads at once, a renamed detector in
alarm, and a reload whose sections wait for a restart (what status and the platform are told)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from citynerve.gateway.control import ask
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.integration.conftest import GatewayProcess, devices_online, gateway_config
from tests.integration.run_process import Run
from tests.integration.test_run_removed_detector import site

NEW_DEVICE = (
    '\n[[devices]]\nid = "d1-9"\nbus = "tcp-1"\nprofile = "test-counter"\naddress = 9\n'
    'location = { address_code = "310106013007" }\n'
)


def status(sock: Path) -> dict[str, Any]:
    return asyncio.run(ask(sock, "status"))


def messages(gw: GatewayProcess) -> list[str]:
    out = []
    for line in gw.log.read_text().splitlines():
        try:
            out.append(str(json.loads(line)["msg"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def logged(gw: GatewayProcess, text: str) -> bool:
    return any(text in m for m in messages(gw))


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=config.parent,
    )


def test_sighup_reloads_the_config_and_the_gateway_keeps_running(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """SIGHUP (the Unix "re-read your config") killed `citynerve run` (exit 129): no clean stop,
    and systemd's Restart=on-failure does not restart a process killed by SIGHUP."""
    config = gateway_config(tmp_path, modbus_peer, buses=2, units=2)
    sock = tmp_path / "var" / "gw.sock"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: devices_online(sock) == 4)
    good = config.read_text()
    config.write_text(good + NEW_DEVICE)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for(lambda: devices_online(sock) == 5)  # the change is taken; still running
    gw.wait_for(lambda: logged(gw, "config reloaded (SIGHUP)"))
    # A broken file: refused, said in the gateway's own log, the gateway runs on as it was.
    config.write_text(good + NEW_DEVICE + '\n[[devices]]\nid = "bad"\nbus = "nope"\n')
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for(lambda: logged(gw, "config reload (SIGHUP) refused"))
    assert any("devices[5] (id 'bad').bus" in m for m in messages(gw)), messages(gw)[-5:]
    assert devices_online(sock) == 5
    assert gw.kill(signal.SIGTERM) == 0


def _connections(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_reloads_at_once_leave_one_owner_per_bus_and_sigterm_stops(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """Overlapping reloads each planned from the config before the first one swapped it and each
    started a new owner: several connections to one server, orphaned owners delivering readings,
    and a SIGTERM that never completed (the task group waited for the orphans)."""
    config = gateway_config(tmp_path, modbus_peer, buses=2, units=2)
    sock = tmp_path / "var" / "gw.sock"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: devices_online(sock) == 4)
    assert gw.proc is not None
    assert _connections(gw.proc.pid, modbus_peer) == 2  # one per bus
    config.write_text(config.read_text().replace("timeout_s = 0.5", "timeout_s = 0.6"))

    async def burst() -> list[Any]:
        return await asyncio.gather(*(ask(sock, "reload", timeout_s=60) for _ in range(3)))

    answers = asyncio.run(burst())
    assert answers[0]["changed"] == ["tcp-0", "tcp-1"], answers
    assert all(a["changed"] == [] for a in answers[1:]), answers  # one after the other: no change left
    gw.wait_for(lambda: devices_online(sock) == 4)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # the stopped owners' sockets close; no other ever opens
        assert _connections(gw.proc.pid, modbus_peer) <= 2
        time.sleep(0.1)
    assert _connections(gw.proc.pid, modbus_peer) == 2
    started = time.monotonic()
    assert gw.kill(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10.0
    assert not any("still stopping" in m for m in messages(gw))


async def test_a_detector_renamed_while_in_alarm_is_raised_under_its_new_id(short_dir: Path) -> None:
    """Renamed in alarm: the reload answered "rules take it only after a restart", cleared the old
    id's alarm as "no longer active" and dropped its interlock entry while the smoke stood, and the
    new id raised nothing until a restart. Now the rule engine is bound to the new devices at the
    reload: the new id is raised and holds the valve's close back."""
    async with site() as s:
        path = s.config(short_dir, detector=True)
        async with Run(path) as run:
            s.smoke()
            await run.until("rule smoke on sd-3: raised")
            path.write_text(path.read_text().replace('id = "sd-3"', 'id = "sd-3x"'))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "citynerve.gateway.cli", "config", "reload", "-c", str(path),
                cwd=short_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, (out, err)
            await run.until("rule smoke on sd-3x: raised")
            await run.until("alarm smoke on sd-3 (smoke) no longer active: cleared")
            answer = await ask(short_dir / "var" / "gw.sock", "status")
            alarms = {(a["device_id"], a["kind"]) for a in answer["alarms"]}
            assert ("sd-3x", "smoke") in alarms and ("sd-3", "smoke") not in alarms, alarms
            s.leak()
            held = await run.until("action close_valve on riser-1.valve")
            assert "interlocked interlock water_on_during_fire: smoke raised on sd-3x" in held, held
            assert s.valve_open()


def test_a_restart_pending_after_a_reload_is_shown_in_status_and_to_the_platform(
    short_dir: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """A reload whose [upstream] waits for a restart: status showed the new file's hash while the
    old broker was in use, and nothing said a restart was pending."""
    with MosquittoBroker(workdir=short_dir) as broker:
        config = gateway_config(short_dir, modbus_peer, buses=1, units=1)
        upstream = f'\n[upstream]\nbrokers = ["{broker.url}"]\nstatus_interval_s = 0.5\n'
        config.write_text(config.read_text() + upstream)
        sock = short_dir / "var" / "gw.sock"

        async def scenario() -> None:
            async with PlatformConsumer(
                host=broker.host, port=broker.port, db_path=short_dir / "platform.db"
            ) as consumer:
                gw = gateway_process(config)
                gw.start()
                await asyncio.to_thread(gw.wait_for, lambda: devices_online(sock) == 1)
                before = (await ask(sock, "status"))["config"]
                assert before["restart_pending"] == []
                edited = config.read_text().replace("status_interval_s = 0.5", "status_interval_s = 0.6")
                config.write_text(edited)
                reload = await asyncio.to_thread(cli, config, "config", "reload")
                assert reload.returncode == 3, reload.stderr
                said = " ".join(reload.stderr.split())  # rich wraps at the terminal's width
                assert "its [upstream] section takes it only after a restart" in said, said
                after = (await ask(sock, "status"))["config"]
                assert after["restart_pending"] == ["upstream"]
                assert after["started"] == {"version": before["version"], "sha256": before["sha256"]}
                assert after["sha256"] != before["sha256"]  # the file's: its buses and devices are in effect
                text = await asyncio.to_thread(cli, config, "status")
                assert "restart pending for [upstream]" in " ".join(text.stdout.split()), text.stdout

                def platform_sees() -> bool:
                    doc = consumer.store.document("gw-test", "status") or {}
                    return (doc.get("gateway") or {}).get("config", {}).get("restart_pending") == ["upstream"]

                deadline = time.monotonic() + 15
                while not platform_sees():
                    assert time.monotonic() < deadline, consumer.store.document("gw-test", "status")
                    await asyncio.sleep(0.1)
                assert gw.kill(signal.SIGTERM) == 0

        asyncio.run(scenario())
