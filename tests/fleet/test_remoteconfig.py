"""Remote configuration pieces without a broker: chunk assembly bounds, merge patches, validation
with key paths, the history folder (bounded snapshots, rollback) and the start-up revert of a
config that never got confirmed."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import load_config
from citynerve.gateway.remoteconfig import ConfigHistory, HistoryError, prepare_start
from citynerve.gateway.remoteconfig.document import (
    MAX_CHUNK_BYTES,
    MAX_DOCUMENT_BYTES,
    ChunkAssembler,
    DocumentError,
    candidate_text,
    check_hash,
    merge_patch,
    validate,
)
from citynerve.gateway.remoteconfig.manager import MAX_PENDING_STARTS, health, verdict
from citynerve.gateway.uplink.config import CommandsConfig, UpstreamConfig
from tests.integration.conftest import gateway_config


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_chunks_are_bounded_and_reassembled_in_order() -> None:
    now = [0.0]
    chunks = ChunkAssembler(clock=lambda: now[0])
    assert chunks.add("u1", 1, 2, b64(b"world"))["received"] == 1
    assert chunks.add("u1", 0, 2, b64(b"hello "))["received"] == 2
    assert chunks.take("u1") == b"hello world"
    with pytest.raises(DocumentError, match="no upload"):
        chunks.take("u1")  # taken once
    with pytest.raises(DocumentError, match="at most"):
        chunks.add("u2", 0, 1, b64(b"x" * (MAX_CHUNK_BYTES + 1)))
    with pytest.raises(DocumentError, match="count must be"):
        chunks.add("u2", 0, MAX_DOCUMENT_BYTES, b64(b"x"))
    with pytest.raises(DocumentError, match="base64"):
        chunks.add("u2", 0, 1, "not base64!")
    chunks.add("u3", 0, 2, b64(b"a"))
    with pytest.raises(DocumentError, match="misses chunks \\[1\\]"):
        chunks.take("u3")
    chunks.add("u4", 0, 2, b64(b"a"))
    now[0] = 601.0  # too old: dropped
    chunks.add("u5", 0, 1, b64(b"b"))
    with pytest.raises(DocumentError, match="no upload 'u4'"):
        chunks.take("u4")
    with pytest.raises(DocumentError, match="sha256"):
        check_hash(b"abc", hashlib.sha256(b"abd").hexdigest())
    check_hash(b"abc", hashlib.sha256(b"abc").hexdigest())


def test_patches_merge_allowed_sections_only() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": [1]}}) == {"a": {"c": 2, "d": [1]}}
    current = '[gateway]\nid = "gw"\n[upstream]\nbrokers = ["mqtt://a:1883"]\nstatus_interval_s = 30\n'
    text = candidate_text(current, json.dumps({"upstream": {"brokers": ["mqtt://b:1883"]}}).encode(), "patch")
    assert 'brokers = [\n    "mqtt://b:1883",\n]' in text or '"mqtt://b:1883"' in text
    assert "status_interval_s = 30" in text
    with pytest.raises(DocumentError, match="not gateway"):
        candidate_text(current, b'{"gateway": {"id": "other"}}', "patch")
    with pytest.raises(DocumentError, match="not TOML"):
        candidate_text(current, b"[gateway", "replace")
    with pytest.raises(DocumentError, match="mode must be"):
        candidate_text(current, b"{}", "merge")
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(DocumentError, match="deeper"):
        candidate_text(current, json.dumps({"rules": deep}).encode(), "patch")


def test_validation_lists_every_issue_with_key_paths_and_keeps_the_identity(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 5020, buses=1, units=2)
    running = load_config(config)
    text = config.read_text()
    bad = text.replace('profile = "test-counter"\naddress = 2', 'profile = "nope"\naddress = 2')
    bad = bad.replace("address = 1\n", "address = 9999\n")
    with pytest.raises(ConfigError) as err:
        validate(config, bad, running)
    paths = [i.path for i in err.value.issues]
    assert any(p.startswith("devices[1]") for p in paths) and any(p.startswith("devices[0]") for p in paths)
    with pytest.raises(ConfigError) as err:
        validate(config, text.replace('id = "gw-test"', 'id = "gw-other"'), running)
    assert [i.path for i in err.value.issues] == ["gateway.id"]
    assert validate(config, text, running).gateway.id == "gw-test"
    assert not list(tmp_path.glob(".*candidate*"))  # the candidate file is gone


def test_history_is_bounded_and_rolls_back(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("one = 1\n")
    config.chmod(0o640)
    hist = ConfigHistory(config, max_snapshots=3)
    assert hist.current()["version"] == "local"
    for i in range(5):
        hist.snapshot(f"v = {i}\n", f"v{i}")
    snaps = hist.snapshots()
    assert [s.version for s in snaps] == ["v2", "v3", "v4"]
    assert sorted(p.name for p in hist.dir.glob("*.toml")) == ["0003.toml", "0004.toml", "0005.toml"]
    assert hist.dir.stat().st_mode & 0o777 == 0o700
    snap, before = hist.rollback("v3", by="test")
    assert config.read_text() == "v = 3\n" and before["version"] == "local"
    assert config.stat().st_mode & 0o777 == 0o640  # the config keeps its mode
    assert hist.current()["version"] == "v3"
    assert hist.snapshots()[-1].version == "local"  # what it replaced is kept
    assert hist.log()[-1]["what"] == "rollback"
    with pytest.raises(HistoryError, match="no snapshot of version 'v0'"):
        hist.rollback("v0", by="test")
    config.write_text("edited = true\n")
    assert hist.current()["version"] == "local"  # changed by hand
    (hist.dir / snap.file).write_text("tampered = 1\n")
    with pytest.raises(HistoryError, match="hash"):
        hist.snapshot_text(snap)


def test_a_pending_config_that_never_confirms_is_reverted_before_loading(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("old = 1\n")
    hist = ConfigHistory(config)
    snap = hist.snapshot("old = 1\n", "v1")
    hist.set_pending({"version": "v2", "sha256": "x", "snapshot": snap.seq, "previous": {"version": "v1"}})
    config.write_text("new = 1\n")
    for start in range(1, MAX_PENDING_STARTS + 1):
        assert f"(start {start})" in str(prepare_start(config))
        assert config.read_text() == "new = 1\n"
    assert "reverted" in str(prepare_start(config))
    assert config.read_text() == "old = 1\n"
    pending = hist.pending()
    assert pending is not None and pending["state"] == "reverted"
    assert prepare_start(config) is None  # reported by the running gateway, not counted again
    assert hist.current()["version"] == "v1"


def test_verdict_judges_against_the_baseline() -> None:
    before = {"uplink": True, "buses_down": ["b2"], "faulted": ["d9"], "unpolled": []}
    ok = {"uplink": True, "buses_down": ["b2"], "faulted": ["d9"], "unpolled": []}
    assert verdict(before, ok) is None
    assert verdict(before, {**ok, "uplink": None}) is None  # no uplink configured
    assert verdict(before, {**ok, "uplink": False}) == "uplink not connected"
    assert verdict(before, {**ok, "buses_down": ["b1", "b2"]}) == "buses down: b1"
    assert verdict(before, {**ok, "faulted": ["d1", "d9"]}) == "devices faulted: d1"
    assert verdict(before, {**ok, "unpolled": ["d5"]}) == "devices not polled yet: d5"
    assert verdict(before, {**ok, "unpolled": ["d5"]}, require_polled=False) is None
    # a further destination that does not connect, unless it did not before the change either
    assert verdict(before, {**ok, "destinations_down": ["fire"]}) == "destinations not connected: fire"
    assert verdict({**before, "destinations_down": ["fire"]}, {**ok, "destinations_down": ["fire"]}) is None
    # the destination the change came through must carry commands afterwards, whatever the first one
    linked = {**ok, "uplink": False, "command_links": ["city"]}
    assert verdict(before, linked, via="city") is None
    assert verdict(before, {**ok, "command_links": ["legacy"]}, via="city") == (
        "uplink not connected: destination city (the change came through it)"
    )


def test_a_change_that_turns_off_commands_on_its_own_destination_is_reverted() -> None:
    """The destination the change came through, connected and JSON v1 but with its commands turned
    off by the change ([upstream.commands] enabled = false): no command, and no change back, reaches
    the gateway from that platform any more. It is no command link; the change is reverted. It was
    confirmed (connected and JSON v1 was enough)."""
    base = UpstreamConfig.model_validate({"id": "city", "brokers": ["mqtt://127.0.0.1:1883"]})
    on = base.model_copy(update={"commands": CommandsConfig.model_construct(enabled=True)})

    def judged(city: UpstreamConfig) -> dict[str, Any]:
        states = {"destinations": {"city": {"connected": True}}}
        gateway: Any = SimpleNamespace(
            config=SimpleNamespace(destinations=(city,), upstream=city),
            uplink_state=lambda: {"connected": True, **states},
            bus_stats=lambda: [],
        )
        return health(gateway)

    before = judged(on)
    assert before["command_links"] == ["city"] and verdict(before, before, via="city") is None
    off = judged(base)
    assert off["command_links"] == []
    assert (
        verdict(before, off, via="city")
        == "uplink not connected: destination city (the change came through it)"
    )
