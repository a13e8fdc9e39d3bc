"""A/B update with rollback, with real releases built in the test and a real `citynerve run` started
from the `current` link as the service (ProcessService: the same command the systemd unit runs).

1.0.0 is installed from its bundle; 1.0.1 is a good update (confirmed); 1.0.2 migrates the outbox
and never reports healthy (rolled back, outbox restored to what 1.0.1 reads); 1.0.3 crash-loops
(rolled back); `update rollback` then goes back to 1.0.0, which reads the outbox 1.0.1 wrote."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.release.service import ProcessService
from citynerve.gateway.release.update import gateway_status
from citynerve.hil.platform import MosquittoBroker, find_mosquitto
from tests.integration.conftest import gateway_config

from .conftest import ReleaseKey, build, install_from_bundle

pytestmark = pytest.mark.slow
DEADLINE = "20"


def never_healthy_with_a_migration(src: Path) -> None:
    with (src / "gateway" / "runtime.py").open("a") as f:
        f.write(
            "\n\nasync def _never_healthy(self):  # type: ignore[no-untyped-def]\n"
            "    raise RuntimeError('test release: never reports healthy')\n\n\n"
            "Gateway.status = _never_healthy  # type: ignore[method-assign]\n"
        )
    with (src / "gateway" / "store" / "_schema.py").open("a") as f:
        f.write(
            "\n\n@migration(len(MIGRATIONS) + 1)\n"
            "def _test_release_table(conn: sqlite3.Connection) -> None:\n"
            "    conn.execute('CREATE TABLE test_release_marker (x INTEGER)')\n"
        )


def crash_loop(src: Path) -> None:
    with (src / "gateway" / "cli" / "cmd_run.py").open("a") as f:
        f.write(
            "\n\ndef _crash(*args, **kwargs):  # type: ignore[no-untyped-def]\n    raise SystemExit(3)\n\n\n"
        )
        f.write("run.callback = _crash\n")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, release_key: ReleaseKey) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("releases")
    return {
        "1.0.0": build(tmp, "1.0.0", release_key),
        "1.0.1": build(tmp, "1.0.1", release_key),
        "1.0.2": build(tmp, "1.0.2", release_key, patch=never_healthy_with_a_migration),
        "1.0.3": build(tmp, "1.0.3", release_key, patch=crash_loop),
    }


@pytest.fixture
def modbus_peer_port() -> Iterator[int]:
    peer = Path(__file__).parents[1] / "integration" / "modbus_peer.py"
    proc = subprocess.Popen([sys.executable, str(peer), "--units", "5"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    yield int(proc.stdout.readline())
    proc.kill()
    proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (.ci/run does this)")
    b = MosquittoBroker(workdir=tmp_path)
    b.start()
    yield b
    b.close()


def wait_for(what: str, predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_apply_confirms_a_good_release_and_rolls_back_bad_ones(
    bundles: dict[str, Path], tmp_path: Path, release_key: ReleaseKey, modbus_peer_port: int,
    broker: MosquittoBroker,
) -> None:  # fmt: skip
    root = tmp_path / "opt"
    assert install_from_bundle(bundles["1.0.0"], root, release_key.public).returncode == 0
    config = gateway_config(tmp_path / "site", modbus_peer_port, buses=1, units=3)
    config.write_text(
        config.read_text() + f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
    )
    config_hash = hashlib.sha256(config.read_bytes()).hexdigest()
    socket = tmp_path / "site" / "var" / "gw.sock"
    outbox = tmp_path / "site" / "var" / "gw.db"
    service = ProcessService(root, config)
    cn = str(root / "bin" / "citynerve")

    def status() -> dict[str, Any] | None:
        return gateway_status(socket)

    def running(version: str) -> dict[str, Any] | None:
        st = status()
        ok = st and st["version"] == version and (st.get("uplink") or {}).get("connected")
        return st if ok and st["buses"][0]["counters"]["transactions"] > 0 else None

    def update(*args: str) -> tuple[int, dict[str, Any]]:
        opts = ["--root", str(root), "-c", str(config), "--service", "process", "--settle", "2", "--json"]
        proc = subprocess.run([cn, "update", *args, *opts, "--deadline", DEADLINE], capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert proc.stdout.strip(), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def links() -> tuple[str, str]:
        return os.readlink(root / "current"), os.readlink(root / "known-good")

    service.start()
    try:
        wait_for("1.0.0 running with its uplink connected", lambda: running("1.0.0"))

        # A good release: installed beside, switched, confirmed.
        code, state = update("apply", str(bundles["1.0.1"]))
        assert code == 0 and state["phase"] == "confirmed", state
        assert links() == ("releases/1.0.1", "releases/1.0.1")
        assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0", "1.0.1"]
        wait_for("1.0.1 running", lambda: running("1.0.1"))
        schema = sqlite3.connect(outbox).execute("PRAGMA user_version").fetchone()[0]

        # Migrates the outbox, then never reports healthy: the watchdog switches back by itself
        # and restores the outbox that 1.0.1 reads.
        code, state = update("apply", str(bundles["1.0.2"]))
        assert code == 1 and state["phase"] == "rolled-back", state
        assert "control socket does not answer" in state["reason"]
        assert state["outbox_restored"] is True and state["old_healthy"] is True
        assert links() == ("releases/1.0.1", "releases/1.0.1")
        assert sqlite3.connect(outbox).execute("PRAGMA user_version").fetchone()[0] == schema
        wait_for("1.0.1 running again", lambda: running("1.0.1"))

        # Crash-loops at start: rolled back too.
        code, state = update("apply", str(bundles["1.0.3"]))
        assert code == 1 and state["phase"] == "rolled-back" and state["old_healthy"] is True, state
        assert "not running" in state["reason"]
        assert links() == ("releases/1.0.1", "releases/1.0.1")
        before = wait_for("1.0.1 running again", lambda: running("1.0.1"))["store"]["next_seq"]

        # Back to 1.0.0 by hand: it reads the outbox 1.0.1 wrote and goes on from its seq.
        code, state = update("rollback")
        assert code == 0 and state["phase"] == "confirmed" and state["to"] == "1.0.0", state
        after = wait_for("1.0.0 running", lambda: running("1.0.0"))["store"]["next_seq"]
        assert after >= before
        assert links() == ("releases/1.0.0", "releases/1.0.0")

        report = subprocess.run([cn, "update", "status", "--root", str(root), "--json"], capture_output=True,
                                text=True, check=True)  # fmt: skip
        st = json.loads(report.stdout)
        assert st["current"] == st["known_good"] == "1.0.0" and not st["in_progress"]
        assert [(h["to"], h["phase"]) for h in st["history"]] == [
            ("1.0.1", "confirmed"),
            ("1.0.2", "rolled-back"),
            ("1.0.3", "rolled-back"),
            ("1.0.0", "confirmed"),
        ]
        assert hashlib.sha256(config.read_bytes()).hexdigest() == config_hash
    finally:
        service.stop()
        state = json.loads((root / "update" / "state.json").read_text()) if (root / "update").exists() else {}
        pid = state.get("watchdog_pid")
        if isinstance(pid, int) and state.get("phase") not in ("confirmed", "rolled-back"):
            os.kill(pid, signal.SIGKILL)
