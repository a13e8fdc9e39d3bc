"""`citynerve demo` on a machine without Mosquitto (the README's first command, no root to install
it): the demo falls back to the embedded amqtt broker, which speaks MQTT 3.1.1 only and has no
shared subscriptions, so the gateway's uplink and the platform consumer must be configured for it.
Before this was handled the gateway's MQTT 5 CONNECT was refused and the platform received nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.gateway.api import GatewayError
from citynerve.hil import demo
from citynerve.hil.demo import _event_kinds, demo_broker_kind
from citynerve.hil.demo_building import GATEWAY_ID
from citynerve.hil.platform.store import PlatformStore

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "citynerve.gateway.cli")


def test_auto_takes_the_embedded_broker_when_mosquitto_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "find_mosquitto", lambda: None)
    assert demo_broker_kind("auto") is True
    assert demo_broker_kind("embedded") is True
    with pytest.raises(GatewayError, match="Mosquitto"):
        demo_broker_kind("mosquitto")
    monkeypatch.setattr(demo, "find_mosquitto", lambda: "/usr/sbin/mosquitto")
    assert demo_broker_kind("auto") is False
    with pytest.raises(ValueError, match="unknown demo broker"):
        demo_broker_kind("emqx")


@pytest.mark.slow
def test_the_demo_reaches_the_platform_through_the_embedded_broker(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--duration", "22", "--broker", "embedded", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "embedded amqtt, MQTT 3.1.1" in proc.stdout, out
    assert 'protocol = "3.1.1"' in (tmp_path / "gateway.toml").read_text(encoding="utf-8")
    store = PlatformStore(tmp_path / "platform.db")
    try:
        kinds = _event_kinds(store.events(GATEWAY_ID))
        readings = store.readings(GATEWAY_ID)
        lanes = store.lanes()
    finally:
        store.close()
    assert len(readings) > 50, len(readings)
    # The smoke alarm at 12 s and the forced door reach the platform (acknowledged end to end).
    assert {"smoke", "door_forced"} <= kinds, kinds
    assert lanes and all(lane.open_gap is None and lane.duplicates == 0 for lane in lanes), lanes
