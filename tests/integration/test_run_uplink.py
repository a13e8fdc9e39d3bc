"""A real `citynerve run` forwarding to a real Mosquitto and the reference platform consumer,
killed with SIGKILL mid-publish and restarted on its backlog (end-to-end acks).

Every seq the gateway ever assigned is, after recovery, either stored by the platform or still
waiting in the outbox: nothing lost; duplicates are counted (and dropped by the platform).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from citynerve.gateway.store import Lane, Outbox, read_stats
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.integration.conftest import GatewayProcess, gateway_config
from tests.uplink.conftest import PLATFORM_SIGNER, platform_key_file

GW = "gw-test"


def outbox_seqs(db: Path) -> tuple[set[int], int]:
    outbox = Outbox(db)
    try:
        left = {r.seq for lane in Lane for r in outbox.peek(lane, limit=1_000_000)}
        return left, outbox.next_seq - 1
    finally:
        outbox.close()


def skipped_at_restart(db: Path) -> set[int]:
    """The seqs a restart after a kill skips: reserved ahead by the epoch marker and given to no
    row (docs/store.md, "Store epoch"), so that no seq a lost commit had is ever used again."""
    reserved = json.loads((db.parent / f"{db.name}.epoch").read_text())["reserved"]
    return set(range(read_stats(db).next_seq, reserved))


async def wait_until(predicate: object, timeout_s: float = 30.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def test_sigkill_mid_publish_then_restart_loses_nothing(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    with MosquittoBroker() as broker:
        config = gateway_config(tmp_path, modbus_peer, buses=2, units=5)
        config.write_text(
            config.read_text()
            + f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\ne2e_ack = true\n'
            + f'commands = {{ hmac_key_file = "{platform_key_file()}" }}\n'  # acks are signed
        )
        db = tmp_path / "var" / "gw.db"

        async def scenario() -> tuple[set[int], int, set[int]]:
            async with PlatformConsumer(
                host=broker.host,
                port=broker.port,
                db_path=tmp_path / "platform.db",
                ack_signer=PLATFORM_SIGNER,
            ) as c:

                def stored() -> set[int]:
                    return set(c.store.reading_seqs(GW)) | set(c.store.event_seqs(GW))

                gw = gateway_process(config)
                gw.start()
                await wait_until(lambda: len(stored()) > 300)
                gw.kill(signal.SIGKILL)  # mid-publish: ~200 readings/s are flowing
                at_kill = len(stored())
                skipped = skipped_at_restart(db)
                gw2 = gateway_process(config)
                gw2.start()
                await wait_until(lambda: len(stored()) > at_kill + 300)
                assert gw2.kill(signal.SIGTERM) == 0
                await asyncio.sleep(1.0)  # the last acked messages reach the consumer
                duplicates = sum(v.duplicates for v in c.store.lanes())
                return stored(), duplicates, skipped

        platform, duplicates, skipped = asyncio.run(scenario())
    left, last_seq = outbox_seqs(db)
    assert skipped and not skipped & (platform | left)
    missing = set(range(1, last_seq + 1)) - platform - left - skipped
    assert not missing, f"{len(missing)} seqs lost, e.g. {sorted(missing)[:10]}"
    print(f"platform holds {len(platform)} rows, {len(left)} still queued, {duplicates} duplicates dropped")
