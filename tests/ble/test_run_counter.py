"""A real `citynerve run` and a node on a virtual HCI dongle: a node whose flash was erased (its
counter restarted at 1) is refused with a status that names the remedy, and `citynerve diag ble
reset-counter` lets it in; a node re-keyed (a new key written into its existing key file, then
`citynerve config reload`) is heard at once with the new key and a fresh counter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ble_support import CITYNERVE, KEY, MAC, run_config

from citynerve.gateway.control import ask
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualDongle, VirtualRadio

OLD_COUNTER = 105_152  # a node a year in the field


@contextlib.asynccontextmanager
async def _gateway(cfg: Path, sock: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        CITYNERVE, "run", "-c", str(cfg), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            while True:
                assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
                with contextlib.suppress(Exception):  # not up yet: no socket, or no bus owner yet
                    await ask(sock, "diag", bus="ble0", action="stats", timeout_s=2.0)
                    break
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 20)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stats(sock: Path) -> dict[str, Any]:
    result: dict[str, Any] = (await ask(sock, "diag", bus="ble0", action="stats"))["devices"]["mh-1"]
    return result


async def _until(sock: Path, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The node's link statistics once `done` holds (an advert is heard within milliseconds on the
    virtual radio; 20 s is the bound for a loaded CI machine, not a timing bet)."""
    for _ in range(400):
        stats = await _stats(sock)
        if done(stats):
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: {stats}")


async def _device_status(cfg: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        CITYNERVE, "status", "-c", str(cfg), "--json", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    device: dict[str, Any] = json.loads(out)["buses"][0]["devices"][0]
    return device


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CITYNERVE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _tilt_events(db: Path) -> list[str]:
    outbox = AsyncOutbox(db)
    await outbox.open()
    try:
        records = [r.record for r in await outbox.peek(Lane.EVENT, limit=1000)]
    finally:
        await outbox.close()
    return [str(getattr(r, "state", "")) for r in records if getattr(r, "kind", "") == "manhole_tilt"]


async def test_a_reflashed_node_is_refused_with_the_remedy_and_reset_counter_lets_it_in(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "gw.sock"
    with VirtualRadio("gw-reflash") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = run_config(tmp_path, dongle.client_transport, "gw-ble-counter")
            async with _gateway(cfg, sock):
                node = ManholeCoverNode(radio, MAC, key=KEY, counter=OLD_COUNTER)
                reflashed = ManholeCoverNode(radio, "A4:C1:38:00:00:01", key=KEY, counter=1)
                try:
                    await node.state(tilt_deg=1.0)
                    await _until(sock, lambda s: s["accepted"] == 1, "the node a year old")
                    # esptool erase_flash, the firmware and the same config.json again: counter from 1
                    await reflashed.state(tilt_deg=60.0, tilt_alarm=True)
                    await _until(sock, lambda s: s["rejected"].get("replay", 0) >= 1, "the reflashed node")
                    device = await _device_status(cfg)
                    assert device["cause"] == "counter_restarted", device
                    assert "citynerve diag ble reset-counter mh-1" in device["reason"], device
                    assert "provision it anew with a new key" in device["reason"], device

                    rc, out = await _cli("diag", "ble", "reset-counter", "mh-1", "-c", str(cfg))
                    assert rc == 0, out
                    assert "mh-1: replay counter reset" in out
                    await reflashed.state(tilt_deg=61.0, tilt_alarm=True)
                    stats = await _until(sock, lambda s: s["accepted"] == 2, "the node after the reset")
                    assert stats["last_counter"] < 10 and stats["rejected"].get("replay", 0) == 0
                    assert (await _device_status(cfg))["cause"] == "ok"
                    # a node not in the config, or not a BLE node: exit 2, nothing sent
                    rc, out = await _cli("diag", "ble", "reset-counter", "mh-2", "-c", str(cfg))
                    assert rc == 2 and "no BLE node 'mh-2'" in out and "mh-1" in out, out
                finally:
                    await node.close()
                    await reflashed.close()
    assert await _tilt_events(tmp_path / "gw.db") == ["raised"]
    # with no gateway running the counters are out of reach: said so, exit 1
    rc, out = await _cli("diag", "ble", "reset-counter", "mh-1", "-c", str(cfg))
    assert rc == 1 and "start it, then run this again" in out, out


async def test_a_new_key_in_the_key_file_is_taken_by_config_reload_with_a_fresh_counter(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "gw.sock"
    key_file = tmp_path / "keys" / "mh-1.key"
    key_file.parent.mkdir()
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    new_key = secrets.token_bytes(16)
    with VirtualRadio("gw-rekey") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = run_config(
                tmp_path, dongle.client_transport, "gw-ble-counter", 'key_file = "keys/mh-1.key"'
            )
            async with _gateway(cfg, sock):
                node = ManholeCoverNode(radio, MAC, key=KEY, counter=OLD_COUNTER)
                # the node erased and provisioned anew (provision.py: a fresh key), counter from 1
                rekeyed = ManholeCoverNode(radio, "A4:C1:38:00:00:01", key=new_key, counter=1)
                try:
                    await node.state(tilt_deg=1.0)
                    await _until(sock, lambda s: s["accepted"] == 1, "the node with its first key")
                    key_file.write_text(new_key.hex() + "\n")  # the same file, the new key
                    rc, out = await _cli("config", "reload", "-c", str(cfg))
                    assert rc == 0, out
                    await _until(sock, lambda s: s["accepted"] == 0, "the bus reopened by the reload")
                    await rekeyed.state(tilt_deg=60.0, tilt_alarm=True)
                    stats = await _until(sock, lambda s: s["accepted"] == 1, "the node with its new key")
                    assert stats["rejected"] == {} and stats["last_counter"] < 10, stats
                finally:
                    await node.close()
                    await rekeyed.close()
    assert await _tilt_events(tmp_path / "gw.db") == ["raised"]
