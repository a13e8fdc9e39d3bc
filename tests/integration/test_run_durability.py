"""A real `citynerve run` polling a real Modbus server, killed with SIGKILL mid-write.

Rows another reader has seen committed must all be there after the kill; the seq goes on after a
restart; a clean stop (SIGTERM) exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from citynerve.gateway.control import ask
from tests.integration.conftest import GatewayProcess, devices_online, gateway_config


def committed_seqs(db: Path) -> set[int]:
    """What a separate reader sees committed (read-only, WAL: never blocks the writer)."""
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        seqs = {r[0] for r in conn.execute("SELECT seq FROM events")}
        for first, last in conn.execute("SELECT first_seq, last_seq FROM reading_blocks"):
            seqs.update(range(first, last + 1))  # a block holds readings first..last
        return seqs
    except sqlite3.OperationalError:  # schema not created yet
        return set()
    finally:
        conn.close()


def status(sock: Path) -> dict:
    return asyncio.run(ask(sock, "status"))


def test_sigkill_mid_write_loses_nothing_committed(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    config = gateway_config(tmp_path, modbus_peer)
    db = tmp_path / "var" / "gw.db"
    sock = tmp_path / "var" / "gw.sock"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: devices_online(sock) == 10)
    st = status(sock)
    assert st["gateway_id"] == "gw-test"
    assert all(d["readings"]["count"]["unit"] == "" for b in st["buses"] for d in b["devices"])

    seen: set[int] = set()
    for _ in range(30):  # observe commits for ~1.5 s while the gateway writes ~200 readings/s
        seen |= committed_seqs(db)
        time.sleep(0.05)
    assert len(seen) > 100, len(seen)
    gw.kill(signal.SIGKILL)  # mid-write: commits every 20 ms

    after = committed_seqs(db)
    missing = seen - after
    assert not missing, f"{len(missing)} committed rows lost, e.g. {sorted(missing)[:5]}"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    # Restart on the same store: the lock was released by the kernel, seqs go on.
    gw2 = gateway_process(config)
    gw2.start()
    top = max(after)
    gw2.wait_for(lambda: max(committed_seqs(db)) > top + 50)
    assert gw2.kill(signal.SIGTERM) == 0
    final = committed_seqs(db)
    assert after <= final
    new = sorted(final - after)
    assert new[0] > top


def test_second_gateway_on_the_same_store_is_refused(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    config = gateway_config(tmp_path, modbus_peer, buses=1, units=1)
    sock = tmp_path / "var" / "gw.sock"
    first = gateway_process(config)
    first.start()
    first.wait_for(lambda: devices_online(sock) == 1)
    second = gateway_process(config)
    second.log = tmp_path / "second.log"
    second.start()
    assert second.proc is not None
    assert second.proc.wait(timeout=30) == 1
    text = second.log.read_text()
    assert "another citynerve run (pid" in text and "Traceback" not in text
    assert status(sock)["devices_online"] == 1  # the first one is untouched
