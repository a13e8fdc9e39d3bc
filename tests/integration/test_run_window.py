"""The telemetry window in a real `citynerve run`, killed with SIGKILL.

Readings are committed once per window (`[store] commit_interval_ms`), events at once: an alarm
that a separate reader has seen stored survives a kill -9 right after, and what the kill costs of
telemetry is at most the readings of the last window.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from pymodbus.client import ModbusTcpClient

from citynerve.gateway.api import Event
from citynerve.gateway.store import Lane, read_rows
from citynerve.gateway.store._errors import StoreError
from tests.integration.conftest import GatewayProcess, devices_online, gateway_config

WINDOW_S = 4.0
SLACK_S = 3.0  # the commit itself and a busy machine's scheduling, on top of the window
RULE = """
[rules]
[[rules.rules]]
id = "spare_high"
kind = "threshold"
point = "spare"
above = 0
severity = "major"
"""


def events(db: Path) -> list[tuple[int, str]]:
    """(seq, device) of every stored spare_high event, as a separate read-only reader sees them."""
    try:
        rows = read_rows(db, Lane.EVENT, limit=10_000)
    except StoreError:  # not created yet
        return []
    return [
        (r.seq, r.record.device_id)
        for r in rows
        if isinstance(r.record, Event) and r.record.kind == "spare_high"
    ]


def newest_reading_ts(db: Path) -> float | None:
    try:
        rows = read_rows(db, Lane.TELEMETRY, limit=1, newest=True)
    except StoreError:
        return None
    return rows[0].ts if rows else None


def test_kill_right_after_an_alarm_keeps_it_and_loses_at_most_a_window(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    config = gateway_config(tmp_path, modbus_peer, buses=1, units=4)
    text = config.read_text().replace(
        "commit_interval_ms = 20", f"commit_interval_ms = {WINDOW_S * 1000:.0f}"
    )
    config.write_text(text + RULE)
    db = tmp_path / "var" / "gw.db"
    sock = tmp_path / "var" / "gw.sock"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: devices_online(sock) == 4)
    gw.wait_for(lambda: newest_reading_ts(db) is not None)  # the first window was committed
    time.sleep(WINDOW_S / 4)  # into the next window: its readings wait in memory

    client = ModbusTcpClient("127.0.0.1", port=modbus_peer)
    assert client.connect()
    try:
        for unit in (1, 2, 3):
            assert not client.write_register(1, 1, device_id=unit).isError()  # spare > 0: an alarm
            gw.wait_for(lambda u=unit: f"d0-{u}" in {d for _, d in events(db)})
        seen = events(db)
        killed_at = time.time()
        gw.kill(signal.SIGKILL)  # right after the third alarm was seen stored
    finally:
        client.close()

    assert [d for _, d in seen] == ["d0-1", "d0-2", "d0-3"]
    assert events(db) == seen  # every alarm seen stored is still there
    newest = newest_reading_ts(db)
    assert newest is not None
    lost_s = killed_at - newest
    # Telemetry of at most the last window (and the commit in flight) was lost.
    assert lost_s <= WINDOW_S + SLACK_S, f"readings of the last {lost_s:.1f} s lost (window {WINDOW_S} s)"
