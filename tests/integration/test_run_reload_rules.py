"""The rule engine rebuilt by a reload that changes the devices (gateway/reload.py, `rebind_rules`),
against a real `citynerve run` and real pymodbus servers: what the running engine knew is not lost
and the reload does not wait for what it need not."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from tests.integration.run_process import Run
from tests.integration.test_run_removed_detector import device, site

AFTER_S = 15  # the missing rule's after_s
RELOAD_EVERY_S = 8.0


def counter(i: str, bus: str, unit: int) -> str:
    return (
        f'\n[[devices]]\nid = "{i}"\nbus = "{bus}"\nprofile = "cnt"\naddress = {unit}\n'
        'location = { address_code = "310106013007" }\n'
    )


@contextlib.asynccontextmanager
async def modbus_server(units: int = 1) -> AsyncIterator[tuple[ModbusTcpServer, int]]:
    devices = {u: ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [7] * 8)) for u in range(1, units + 1)}
    context = ModbusServerContext(devices=devices, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        yield server, server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await server.shutdown()


async def reload(config: Path) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citynerve.gateway.cli", "config", "reload", "-c", str(config),
        cwd=config.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_reloads_do_not_restart_a_missing_rules_grace(short_dir: Path) -> None:
    """Every reload that changed the devices built the rule engine again, and the new engine's
    `missing` condition started with the grace period of a restart: a meter gone silent raised its
    alarm after_s after the last reload, never while reloads kept coming (devices added, a remote
    config, SIGHUP). Now the rebuilt engine takes the running one's last reading time: raised about
    after_s after the meter's last reading, whatever the reloads on another bus."""
    async with modbus_server() as (meter, port_a), modbus_server(units=8) as (_, port_b):
        (short_dir / "profiles").mkdir()
        (short_dir / "profiles" / "cnt.toml").write_text(
            'id = "cnt"\nfamily = "modbus"\nsource = "tests"\npoll_interval_s = 1\n'
            '[points.count]\ntable = "holding"\naddress = 0\ntype = "uint16"\n'
        )
        text = textwrap.dedent(
            f"""
            [gateway]
            id = "gw-test"
            org = {{ city = "310100", district = "310106", street = "310106013" }}
            [store]
            path = "var/gw.db"
            [control]
            socket = "var/gw.sock"
            [log]
            format = "json"
            [rules]
            [[rules.rules]]
            id = "silent"
            kind = "missing"
            point = "count"
            after_s = {AFTER_S}
            severity = "major"
            select = {{ devices = ["m1"] }}
            [[buses]]
            id = "tcp-a"
            protocol = "modbus_tcp"
            host = "127.0.0.1"
            port = {port_a}
            timeout_s = 0.5
            [[buses]]
            id = "tcp-b"
            protocol = "modbus_tcp"
            host = "127.0.0.1"
            port = {port_b}
            timeout_s = 0.5
            """
        )
        text += counter("m1", "tcp-a", 1) + counter("m2", "tcp-b", 1)
        config = short_dir / "gw.toml"
        config.write_text(text)
        async with Run(config) as run:
            await asyncio.sleep(4.0)  # m1 is read every second meanwhile
            await meter.shutdown()  # m1 falls silent
            silent_at = time.monotonic()

            async def reloads() -> None:
                nonlocal text
                for n in range(1, 6):  # a device added on the other bus every 8 s
                    await asyncio.sleep(silent_at + RELOAD_EVERY_S * n - time.monotonic())
                    text += counter(f"x{n}", "tcp-b", n + 1)
                    config.write_text(text)
                    code, out, err = await reload(config)
                    assert code == 0, (out, err)

            reloading = asyncio.create_task(reloads())
            try:
                await run.until("rule silent on m1: raised", timeout_s=AFTER_S + 3 * RELOAD_EVERY_S)
            except TimeoutError:
                pytest.fail(f"m1 silent for {time.monotonic() - silent_at:.0f} s: no missing alarm")
            finally:
                reloading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reloading
            raised_after = time.monotonic() - silent_at
            assert any("(reloaded)" in m for m in run.messages)  # the engine was rebuilt meanwhile
            # Before: not before the first reload (8 s) plus after_s, i.e. at least 23 s.
            assert raised_after < AFTER_S + 5, f"raised {raised_after:.1f} s after m1 fell silent"


async def test_a_reload_after_two_raises_does_not_wait_for_the_deferred_snapshot(short_dir: Path) -> None:
    """The reload waited for the running engine's save; a second raise (or interlock change) within
    30 s of the first queues its save for the end of those 30 s (PROMPT_SAVE_MIN_S, SD-card wear),
    so `config reload` (`devices add`) took ~30 s during an incident, each further raise meanwhile
    adding more, and could pass the CLI's 60 s. Now the reload has that save go at once."""
    async with site() as s:
        path = s.config(short_dir, detector=True)
        async with Run(path) as run:
            s.smoke()
            await run.until("rule smoke on sd-3: raised")
            await asyncio.sleep(1.0)
            s.leak()
            await run.until("rule leak on riser-1: raised")
            await asyncio.sleep(1.0)
            path.write_text(path.read_text() + device("sd-4", 3))
            started = time.monotonic()
            code, out, err = await reload(path)
            took = time.monotonic() - started
            assert code == 0, (out, err)
            await run.until("rules: 6 rule instances on 3 devices (reloaded)")
            assert took < 10.0, f"config reload took {took:.1f} s"
