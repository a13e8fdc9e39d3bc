"""A/B update with rollback, with real releases built in the test and a real `citynerve run` started
from the `current` link as the service (ProcessService: the same command the systemd unit runs).

1.0.0 is installed from its bundle. The platform (the fleet tool, over a real Mosquitto) then
updates it remotely: a key without the `update` class is refused, a bundle too big for the disk
budget is refused before any byte moves, a bundle signed with a foreign key (served over HTTP on
loopback) is downloaded and refused; 1.0.1 is pushed in chunks, the gateway is restarted in the
middle, the transfer resumes, the update applies and is confirmed healthy, reported on the result
topic and on the events lane. 1.0.2, downloaded by the gateway from a URL, migrates the outbox and
never reports healthy: rolled back, outbox restored to what 1.0.1 reads, the rollback reported to
the platform. Then locally: 1.0.3 crash-loops (rolled back); `update rollback` goes back to 1.0.0,
which reads the outbox 1.0.1 wrote."""

from __future__ import annotations

import asyncio
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

from citynerve.gateway.release.health import gateway_status
from citynerve.gateway.release.service import ProcessService
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer, find_mosquitto
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.fleet_update import Bundle, update_gateway
from tests.integration.conftest import gateway_config

from .conftest import RELEASES, http_folder, resigned

# Each test waits up to 400 s for an update on a loaded machine; the suite's 300 s default would cut it first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DEADLINE = "20"
GW = "gw-test"
MIB = 1 << 20
RELEASES_KEY = bytes.fromhex("55" * 32)
OPS_KEY = bytes.fromhex("66" * 32)


def remote_update_config(site: Path, root: Path) -> str:
    """Commands with two keys (only "releases" may update) and the [update] table."""
    for name, key in (("releases.key", RELEASES_KEY), ("ops.key", OPS_KEY)):
        (site / name).write_text(key.hex())
        (site / name).chmod(0o600)
    return (
        "[upstream.commands]\nenabled = true\n"
        f'[[upstream.commands.keys]]\nid = "releases"\nhmac_key_file = "{site / "releases.key"}"\n'
        'classes = ["read", "update"]\n'
        f'[[upstream.commands.keys]]\nid = "district-ops"\nhmac_key_file = "{site / "ops.key"}"\n'
        'classes = ["read", "operate"]\n'
        f'\n[update]\nroot = "{root}"\nservice = "process"\ndeadline_s = {DEADLINE}\nsettle_s = 2\n'
        f"disk_budget_bytes = {200 * MIB}\n"
    )


def update_steps(platform: PlatformConsumer, update_id: str) -> list[str]:
    """The phases of one update, as the platform received them on the events lane."""
    return [
        e["attrs"]["phase"]
        for e in platform.store.events(GW)
        if e["kind"] == "software_update" and e["attrs"]["update_id"] == update_id
    ]


async def until_step(platform: PlatformConsumer, update_id: str, phase: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while phase not in update_steps(platform, update_id):
        assert time.monotonic() < deadline, update_steps(platform, update_id)
        await asyncio.sleep(0.5)


async def remote_rollback(broker: MosquittoBroker, bundle: Path, tmp: Path) -> None:
    """A release that never reports healthy, downloaded from a URL: rolled back and reported."""
    releases = CommandSigner(hmac_key=RELEASES_KEY)
    async with (
        PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp / "platform.db") as platform,
        FleetClient(broker.host, broker.port, releases, key_id="releases", timeout_s=5) as fleet,
    ):
        await platform.wait_connected()  # subscribed before the first event
        with http_folder(bundle.parent) as base:
            url_bundle = Bundle.from_file(bundle, url=f"{base}/{bundle.name}")
            out = await update_gateway(fleet, GW, url_bundle, timeout_s=400)
        assert out.phase == "rolled-back" and "control socket does not answer" in out.reason, out
        assert (out.release["from"], out.release["to"], out.release["current"]) == ("1.0.1", "1.0.2", "1.0.1")
        await until_step(platform, out.update_id, "rolled-back")
        # The verdict is written after the outbox restore; earlier steps may be gone with it (the
        # restored outbox numbers its rows from the copy again): only the verdict is asserted.
        assert update_steps(platform, out.update_id)[-1] == "rolled-back"


async def remote_updates(
    broker: MosquittoBroker, service: ProcessService, bundles: dict[str, Path], tmp: Path, root: Path
) -> None:
    """The platform's side: refusals first, then 1.0.1 in chunks with a gateway restart mid-way."""
    foreign = resigned(bundles["1.0.1"], tmp / "foreign")
    big = tmp / "big" / "citynerve-9.9.9-x86_64.tar.gz"
    big.parent.mkdir()
    with big.open("wb") as f:
        f.truncate(30 * MIB)  # 8 x 30 MiB > the 200 MiB budget
    releases = CommandSigner(hmac_key=RELEASES_KEY)
    async with (
        PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp / "platform.db") as platform,
        FleetClient(broker.host, broker.port, releases, key_id="releases", timeout_s=5) as fleet,
        FleetClient(broker.host, broker.port, CommandSigner(hmac_key=OPS_KEY), key_id="district-ops") as ops,
    ):
        await platform.wait_connected()  # subscribed before the first event
        # A district operator's key cannot update.
        out = await update_gateway(ops, GW, bundles["1.0.1"], timeout_s=60)
        assert (out.phase, out.rejected) == ("refused", "not_permitted"), out
        assert "needs the update permission" in out.reason

        # Too big for the disk budget: refused at the start, before any chunk.
        out = await update_gateway(fleet, GW, big, timeout_s=60)
        assert (out.phase, out.rejected, out.chunks_sent) == ("refused", "no_space", 0), out
        assert "disk_budget_bytes" in out.reason
        assert not (root / "update" / "transfer").exists()

        # Signed with a key the gateway does not trust, downloaded from a URL: refused.
        with http_folder(foreign.parent) as base:
            url_bundle = Bundle.from_file(foreign, url=f"{base}/{foreign.name}")
            bad = await update_gateway(fleet, GW, url_bundle, timeout_s=180)
        assert bad.phase == "failed" and "signature does not verify" in bad.reason, bad
        assert os.readlink(root / "current") == "releases/1.0.0"

        # 1.0.1 in chunks; the gateway restarts once it has some, and the transfer resumes.
        loop = asyncio.get_running_loop()
        restart: list[asyncio.Future[None]] = []
        after: list[int] = []
        before = [0]

        def on_progress(res: dict[str, Any]) -> None:
            if res.get("phase") != "receiving":
                return
            if restart and restart[0].done():
                after.append(int(res["received_bytes"]))
            elif not restart and res["received_bytes"] > 0:
                before[0] = int(res["received_bytes"])
                restart.append(loop.run_in_executor(None, service.restart))

        good = Bundle.from_file(bundles["1.0.1"], chunk_bytes=16 * 1024)
        out = await update_gateway(fleet, GW, good, timeout_s=400, window=32, on_progress=on_progress)
        assert restart, "the transfer finished before the restart"
        await restart[0]
        assert out.ok and out.phase == "confirmed", out
        assert out.release["current"] == out.release["known_good"] == "1.0.1", out
        # the restarted gateway found what it had on disk: no answer after it started from zero
        assert after and min(after) >= before[0] > 0, (before, after)
        assert "bytes on disk, waiting for the rest" in (root / "update" / "service.log").read_text()

        # The events lane carries every step, durable across the restart.
        await until_step(platform, out.update_id, "confirmed")
        got = update_steps(platform, out.update_id)
        assert got[0] == "receiving" and got[-1] == "confirmed", got
        assert {"verifying", "applying", "restarting"} <= set(got), got
        assert update_steps(platform, bad.update_id)[-1] == "failed"


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
    # `citynerve run` starts the gateway through gateway/cli/_run.py's `start` (the click command
    # calls the same function): a release whose `start` exits at once crash-loops however it is run.
    with (src / "gateway" / "cli" / "_run.py").open("a") as f:
        f.write("\n\ndef start(args: RunArgs) -> None:  # noqa: F811\n    raise SystemExit(3)\n")


RELEASES.want("1.0.2", "1.0.2", patch=never_healthy_with_a_migration)
RELEASES.want("1.0.3", "1.0.3", patch=crash_loop)
RELEASES.want_install("update-1.0.0", "1.0.0")  # the test's own install, made in the background


@pytest.fixture(scope="module")
def bundles(base_bundles: dict[str, Path]) -> dict[str, Path]:
    return {**base_bundles, "1.0.2": RELEASES.get("1.0.2"), "1.0.3": RELEASES.get("1.0.3")}


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
    bundles: dict[str, Path], tmp_path: Path, modbus_peer_port: int,
    broker: MosquittoBroker,
) -> None:  # fmt: skip
    installed = RELEASES.installed("update-1.0.0")  # install_from_bundle(bundles["1.0.0"], ...)
    root = installed.root
    assert installed.install.returncode == 0, installed.install.stdout + installed.install.stderr
    config = gateway_config(tmp_path / "site", modbus_peer_port, buses=1, units=3)
    config.write_text(
        config.read_text()
        + f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
        + remote_update_config(tmp_path / "site", root)
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

        # From the platform: refusals, then a good release in chunks with a restart in the middle.
        asyncio.run(remote_updates(broker, service, bundles, tmp_path, root))
        assert links() == ("releases/1.0.1", "releases/1.0.1")
        assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0", "1.0.1"]
        wait_for("1.0.1 running", lambda: running("1.0.1"))
        schema = sqlite3.connect(outbox).execute("PRAGMA user_version").fetchone()[0]

        # Migrates the outbox, then never reports healthy (the platform gives its URL): the
        # watchdog switches back by itself and restores the outbox that 1.0.1 reads; the 1.0.1
        # running again reports the rollback to the platform.
        asyncio.run(remote_rollback(broker, bundles["1.0.2"], tmp_path))
        state = json.loads((root / "update" / "state.json").read_text())
        assert state["phase"] == "rolled-back", state
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
