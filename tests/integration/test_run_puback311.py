"""A real `citynerve run` with an MQTT 3.1.1 destination, stopped with SIGTERM while quiet.

Under 3.1.1 a PUBACK settles its message only once the broker sent another packet after it
(docs/uplink.md, "What a broker refuses"); after the last message before a stop, that packet is the
PUBACK of the goodbye (the retained offline status). The runtime stops the uplink by cancelling its
`run()`, whose ack loop was already cancelled with the session: the settled message was never
written as acknowledged, stayed in the outbox and went to the platform again after the restart.
Now the rows the platform holds have left the outbox when the process ends, and a restart sends
nothing twice. Real pymodbus server, real Mosquitto, the reference platform consumer.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.control import GatewayNotRunningError, ask
from citynerve.gateway.store import read_stats
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.integration.conftest import GatewayProcess

GW = "gw-311"
DEVICES = 3  # each reports one reading per run


def _config(tmp: Path, modbus_port: int, broker: MosquittoBroker) -> Path:
    profiles = tmp / "profiles"
    profiles.mkdir()
    # A register that never changes: one reading at start, then nothing (report by exception), so
    # the gateway is quiet when it is stopped and nothing but the goodbye follows the last PUBACK.
    (profiles / "test-still.toml").write_text(
        textwrap.dedent(
            """
            id = "test-still"
            family = "modbus"
            source = "tests/integration/modbus_peer.py: holding register 1 stays 0"
            poll_interval_s = 0.2
            [points.spare]
            table = "holding"
            address = 1
            type = "uint16"
            max_interval_s = 3600
            """
        )
    )
    text = textwrap.dedent(
        f"""
        [gateway]
        id = "{GW}"
        org = {{ city = "310100", district = "310106", street = "310106013" }}
        [store]
        path = "var/gw.db"
        commit_interval_ms = 20
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"
        [[buses]]
        id = "tcp-0"
        protocol = "modbus_tcp"
        host = "127.0.0.1"
        port = {modbus_port}
        timeout_s = 0.5
        """
    )
    for u in range(1, DEVICES + 1):
        text += (
            f'\n[[devices]]\nid = "d-{u}"\nbus = "tcp-0"\nprofile = "test-still"\naddress = {u}\n'
            'location = { address_code = "310106013007" }\n'
        )
    # keepalive_s 60 and no status refresh: no PINGRESP or status PUBACK within the test's time.
    text += (
        f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\nprotocol = "3.1.1"\n'
        "keepalive_s = 60\nstatus_interval_s = 3600\n"
    )
    path = tmp / "gw.toml"
    path.write_text(text)
    return path


def _status(sock: Path) -> dict[str, Any] | None:
    if not sock.exists():
        return None
    try:
        return asyncio.run(ask(sock, "status"))
    except GatewayNotRunningError:
        return None


async def _all_published(sock: Path, platform: set[int], before: int) -> bool:
    """Every device's reading of this run is stored (after seq `before`: a clean stop skips no
    seq), every row is at the platform, and the rows of this run are PUBACKed to the gateway (its
    uplink counts a message's rows as published when it takes the PUBACK)."""
    status = await asyncio.to_thread(_status, sock)
    if status is None or status["store"] is None:
        return False
    last = int(status["store"]["next_seq"]) - 1
    published = sum(status["uplink"]["published_rows"].values())
    return last - before >= DEVICES and platform >= set(range(1, last + 1)) and published >= last - before


def test_a_clean_stop_settles_what_the_broker_acknowledged_and_a_restart_sends_nothing_twice(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    with MosquittoBroker() as broker:
        config = _config(tmp_path, modbus_peer, broker)
        db, sock = tmp_path / "var" / "gw.db", tmp_path / "var" / "gw.sock"

        async def scenario() -> tuple[int, list[Any]]:
            async with PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp_path / "p.db") as c:
                await c.wait_connected()

                def stored() -> set[int]:
                    return set(c.store.reading_seqs(GW)) | set(c.store.event_seqs(GW))

                async def published(gw: GatewayProcess, before: int, timeout_s: float = 30.0) -> None:
                    deadline = time.monotonic() + timeout_s
                    while not await _all_published(sock, stored(), before):
                        assert gw.proc is not None and gw.proc.poll() is None, gw.log.read_text()[-3000:]
                        assert time.monotonic() < deadline, f"timed out; log:\n{gw.log.read_text()[-3000:]}"
                        await asyncio.sleep(0.1)

                gw = gateway_process(config)
                gw.start()
                await published(gw, 0)
                assert gw.kill(signal.SIGTERM) == 0
                stats = read_stats(db)
                left = sum(lane.rows for lane in stats.lanes)
                # Again: the restart reads its devices once more (new seqs) and says hello.
                gw = gateway_process(config)
                gw.start()
                await published(gw, stats.next_seq - 1)
                assert gw.kill(signal.SIGTERM) == 0
                await asyncio.sleep(0.5)  # the last status reaches the consumer
                return left, c.store.lanes()

        left, lanes = asyncio.run(scenario())
    assert left == 0, f"{left} rows the platform holds were left in the outbox by a clean stop"
    assert [lane.duplicates for lane in lanes] == [0] * len(lanes), lanes
