"""Storage faults against the real `citynerve run` (with a real Modbus peer, Mosquitto and the
reference platform consumer where delivery matters): a damaged page, a lost or empty outbox, a
corrupt outbox, a full disk, and a record with a bad timestamp. docs/reliability.md lists them;
tests/store/test_store_real.py runs the same functions under pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Reading
from citynerve.gateway.control import ask
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter, read_rows
from citynerve.hil.faults import Broken, scenario
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer

REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "tests" / "integration" / "modbus_peer.py"
GW = "gw-store-fault"


# -- the rig: a Modbus peer, the gateway process, its status -------------------------------------


class Peer:
    """The integration tests' pymodbus server (holding register 0 counts up), as a process."""

    def __init__(self, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), "--units", "3", "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def modbus_peer(port: int = 0) -> Iterator[Peer]:
    peer = Peer(port)
    try:
        yield peer
    finally:
        peer.stop()


PEER_GONE_BACKOFF_S = (0.4, 2.0)
"""The bus's reconnect waits (initial, max) in the scenarios whose Modbus peer goes away (and comes
back): 0.4 s doubling up to 2 s instead of the defaults' 5 s up to 300 s, so the devices go offline
and are polled again within seconds, not the 15-25 s the defaults' doubling takes. What these
scenarios check is the store; the bus's backoff itself is tested in tests/bus."""


def write_config(
    work: Path,
    port: int,
    *,
    db: str = "var/gw.db",
    broker: MosquittoBroker | None = None,
    commit_ms: int = 20,
    backoff_s: tuple[float, float] | None = None,
) -> Path:
    (work / "profiles").mkdir(parents=True, exist_ok=True)
    (work / "profiles" / "fault-counter.toml").write_text(
        textwrap.dedent(
            """
            id = "fault-counter"
            family = "modbus"
            poll_interval_s = 0.05
            [points.count]
            table = "holding"
            address = 0
            type = "uint16"
            max_interval_s = 0.001
            """
        )
    )
    text = textwrap.dedent(
        f"""
        [gateway]
        id = "{GW}"
        org = {{ city = "310100", district = "310106", street = "310106013" }}
        [store]
        path = "{db}"
        commit_interval_ms = {commit_ms}
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"
        [[buses]]
        id = "tcp-0"
        protocol = "modbus_tcp"
        host = "127.0.0.1"
        port = {port}
        timeout_s = 0.3
        min_poll_interval_s = 0.05  # the fault profile polls every 50 ms
        """
    )
    if backoff_s is not None:  # (initial, max) waits before a failed bus is tried again
        text += f"backoff_initial_s = {backoff_s[0]}\nbackoff_max_s = {backoff_s[1]}\n"
    for u in (1, 2, 3):
        text += (
            f'\n[[devices]]\nid = "d{u}"\nbus = "tcp-0"\nprofile = "fault-counter"\naddress = {u}\n'
            'location = { address_code = "310106013007" }\n'
        )
    if broker is not None:
        text += f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\ne2e_ack = true\n'
    path = work / "gw.toml"
    path.write_text(text)
    return path


class Gateway:
    """`python -m citynerve.gateway.cli run -c CONFIG` as a child process, asked for its status."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.socket = config.parent / "var" / "gw.sock"
        self.log = config.parent / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=REPO,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2500:] if self.log.exists() else ""

    async def status(self) -> dict[str, Any]:
        if not self.alive():
            raise Broken(f"the gateway exited ({self.proc and self.proc.returncode}):\n{self.tail()}")
        try:
            result: dict[str, Any] = await ask(self.socket, "status", timeout_s=10.0)
            return result
        except Exception:  # not up yet: the caller polls
            return {}

    async def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if self.proc.poll() is not None:
                    return
                await asyncio.sleep(0.1)
            self.proc.kill()
            self.proc.wait()


async def until(
    pred: Callable[[], Any], what: str, gw: Gateway | None = None, timeout_s: float = 60.0
) -> Any:
    """Poll `pred` (sync or async) until it gives something true; Broken on timeout or gateway exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if gw is not None and not gw.alive():
            raise Broken(f"the gateway exited while waiting for {what}:\n{gw.tail()}")
        await asyncio.sleep(0.1)
    raise Broken(f"timed out waiting for {what}" + (f"\n{gw.tail()}" if gw else ""))


async def store_status(gw: Gateway) -> dict[str, Any]:
    return (await gw.status()).get("store") or {}


@contextlib.asynccontextmanager
async def running(gw: Gateway) -> AsyncIterator[Gateway]:
    gw.start()
    try:
        await until(lambda: store_status(gw), "the gateway's status", gw)
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def platform(broker: MosquittoBroker, work: Path) -> AsyncIterator[PlatformConsumer]:
    async with PlatformConsumer(host=broker.host, port=broker.port, db_path=work / "platform.db") as c:
        await c.wait_connected()
        yield c


def blocks_in(db: Path) -> list[tuple[int, int, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT first_seq, last_seq, body FROM reading_blocks ORDER BY 1").fetchall()
        return [(int(a), int(b), bytes(c)) for a, b, c in rows]
    finally:
        conn.close()


def marker(db: Path) -> dict[str, Any]:
    return json.loads((db.parent / (db.name + ".epoch")).read_text())  # type: ignore[no-any-return]


# -- scenarios --------------------------------------------------------------------------------------


@scenario(
    "store.damaged_page",
    area="store",
    promise="a damaged page of the outbox costs only the rows on it: announced as a dropped range, "
    "counted; telemetry stored before and after it still reaches the platform",
)
async def damaged_page(work: Path) -> str:
    db = work / "var" / "gw.db"
    with modbus_peer() as peer:
        port = peer.port
        # No uplink yet: the telemetry waits in the outbox, in blocks of a few dozen readings.
        gw = Gateway(write_config(work, port, commit_ms=400))
        async with running(gw):
            await until(lambda: db.exists() and len(blocks_in(db)) >= 12, "12 telemetry blocks", gw)
        blocks = blocks_in(db)
        first, last, body = blocks[len(blocks) // 2]
        data = bytearray(db.read_bytes())
        at = data.find(body)
        if at < 0 or data.find(body, at + 1) >= 0:
            raise Broken("could not find the block's bytes once in the file")
        data[at : at + 4] = b"\xff\xff\xff\xff"  # deflate block type 3 does not exist: damage for sure
        db.write_bytes(bytes(data))
        kept = {s for a, b, _ in blocks if a != first for s in range(a, b + 1)}
        with MosquittoBroker() as broker:
            async with platform(broker, work) as c:
                gw = Gateway(write_config(work, port, broker=broker))
                async with running(gw):
                    after = max(kept) + 200

                    def delivered() -> bool:
                        seqs = set(c.store.reading_seqs(GW))
                        return kept <= seqs and max(seqs) > after

                    await until(delivered, "readings from before and after the damage at the platform", gw)
                    notes = await until(
                        lambda: [e for e in c.store.events(GW) if e["kind"] == "outbox_dropped"],
                        "the dropped-range event",
                        gw,
                    )
                    store = await store_status(gw)
                seqs = c.store.reading_seqs(GW)
        if any(first <= s <= last for s in seqs):
            raise Broken("readings of the damaged block arrived")
        a = notes[0]["attrs"]
        if (a["first_seq"], a["last_seq"], a["reason"]) != (first, last, "damaged"):
            raise Broken(f"the dropped range announced is {a}, expected {first}..{last} damaged")
        if store.get("dropped_by", {}).get("damaged") != last - first + 1:
            raise Broken(f"status counts {store.get('dropped_by')}, expected damaged {last - first + 1}")
    return f"block {first}..{last} damaged: announced and counted; {len(kept)} readings around it delivered"


@scenario(
    "store.zero_length_outbox",
    area="store",
    promise="an outbox found empty (or missing) where one existed starts a new store epoch, says so "
    "in an event, and seq goes on: the platform sees no false duplicate and no phantom gap",
)
async def zero_length_outbox(work: Path) -> str:
    db = work / "var" / "gw.db"
    with modbus_peer() as peer, MosquittoBroker() as broker:
        port = peer.port
        async with platform(broker, work) as c:
            gw = Gateway(write_config(work, port, broker=broker))
            async with running(gw):
                await until(lambda: len(c.store.reading_seqs(GW)) > 200, "200 readings at the platform", gw)
            old = marker(db)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{db}{suffix}")
            db.write_bytes(b"")  # what a file system check may leave
            async with running(gw):
                news = await until(
                    lambda: [e for e in c.store.events(GW) if e["kind"] == "outbox_new_epoch"],
                    "the new-epoch event at the platform",
                    gw,
                )
                epoch = news[0]["attrs"]["epoch"]
                await until(
                    lambda: len(c.store.reading_seqs(GW, epoch)) > 200, "200 readings of the new epoch", gw
                )
                await asyncio.sleep(0.5)  # the last acks
            lanes = [v for v in c.store.lanes() if v.epoch == epoch]
            fresh = c.store.reading_seqs(GW, epoch)
    if epoch == old["epoch"] or news[0]["attrs"]["previous_epoch"] != old["epoch"]:
        raise Broken(f"no new epoch: {news[0]['attrs']} after {old}")
    if min(fresh) < old["next_seq"]:
        raise Broken(f"seq restarted: the new epoch has seq {min(fresh)} < {old['next_seq']}")
    bad = [v for v in lanes if v.duplicates or v.open_gap or v.gaps_seen]
    if bad or len(lanes) != 2:
        raise Broken(f"the new epoch's lanes at the platform: {lanes}")
    return f"epoch {old['epoch']} -> {epoch}, seq went on from {min(fresh)}; no duplicate, no gap"


@scenario(
    "store.corrupt_outbox_quarantined",
    area="store",
    promise="a corrupt outbox is moved aside for forensics and a fresh one started (new epoch, an "
    "event); the gateway keeps polling and raising alarms, it does not crash or restart in a loop",
)
async def corrupt_outbox_quarantined(work: Path) -> str:
    db = work / "var" / "gw.db"
    with modbus_peer() as peer:
        port = peer.port
        gw = Gateway(write_config(work, port, backoff_s=PEER_GONE_BACKOFF_S))
        async with running(gw):
            await until(lambda: len(blocks_in(db)) >= 5 if db.exists() else False, "some telemetry", gw)
        data = bytearray(db.read_bytes())
        data[0:100] = os.urandom(100)  # the header page: "file is not a database"
        db.write_bytes(bytes(data))
        async with running(gw):
            store = await until(lambda: _quarantined(gw), "the outbox moved aside", gw)
            seq = store["next_seq"]
            await until(lambda: _next_seq_above(gw, seq + 100), "readings stored in the fresh outbox", gw)
            peer.stop()  # local alarms (device offline) still raised and stored by the same process
            await until(lambda: _offline_alarms_committed(gw), "offline alarms committed", gw, 90)
        aside = Path(store["quarantined"])
        if aside.read_bytes()[:100] != bytes(data[:100]):  # noqa: ASYNC240
            raise Broken("the corrupt file was not kept as it was")
    kinds = {r.record.kind for r in read_rows(db, Lane.EVENT, limit=1000)}  # type: ignore[union-attr]
    if "outbox_new_epoch" not in kinds:
        raise Broken(f"no outbox_new_epoch event in the fresh outbox (events: {sorted(kinds)})")
    return f"moved aside to {aside.name}; polling went on (seq > {seq + 100}); offline alarms stored"


async def _quarantined(gw: Gateway) -> dict[str, Any] | None:
    store = await store_status(gw)
    return store if store.get("quarantined") and store.get("state") == "degraded" else None


async def _next_seq_above(gw: Gateway, seq: int) -> bool:
    return int((await store_status(gw)).get("next_seq", 0)) > seq


def _events(db: Path, kind: str) -> bool:
    try:
        return any(r.record.kind == kind for r in read_rows(db, Lane.EVENT, limit=1000))  # type: ignore[union-attr]
    except Exception:
        return False


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system with a filler file until not one more byte fits; returns the filler."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


@scenario(
    "store.disk_full",
    area="store",
    promise="on a full disk the oldest telemetry is evicted (announced, counted) to store alarms, "
    "nothing waits in RAM for long, the state shows in status; telemetry is stored again when space is back",
    slow=True,  # ~10 s (devices must go offline and come back); tests/store/test_store_real.py runs it
    timeout_s=240.0,
)
async def disk_full(work: Path) -> str:
    if os.geteuid() != 0:
        raise Broken("needs root to mount a small tmpfs (CI runs as root)")
    with small_disk(work / "disk", "6m") as disk:
        db = disk / "gw.db"
        with modbus_peer() as peer:
            port = peer.port
            gw = Gateway(write_config(work, port, db=str(db), backoff_s=PEER_GONE_BACKOFF_S))
            gw.start()
            try:
                await until(lambda: db.exists() and len(blocks_in(db)) >= 50, "telemetry stored", gw)
                filler = fill(disk)
                await until(lambda: _disk_full(gw), "the store reporting disk_full", gw)
            except BaseException:
                await gw.stop()
                raise
        # The peer is gone: its device_offline alarms must reach the disk although it is full.
        try:
            seen: list[dict[str, Any]] = []
            try:
                status = await until(
                    lambda: _offline_alarms_committed(gw, seen), "offline alarms stored", gw, 90
                )
            except Broken as err:
                raise Broken(f"{err}\nlast status: {seen}") from None
            store = status["store"]
            if not store.get("dropped_by", {}).get("disk_full"):
                raise Broken(f"no telemetry evicted for the alarms: {store}")
            filler.unlink()  # space again
            await until(lambda: _state_ok(gw), "the store back to ok", gw)
            seq = int(store["next_seq"])
            with modbus_peer(port) as _:  # the devices are back: telemetry is stored again
                await until(lambda: _next_seq_above(gw, seq + 200), "telemetry stored after recovery", gw)
        finally:
            await gw.stop()
        events = [r.record for r in read_rows(db, Lane.EVENT, limit=10_000)]
    kinds = [e.kind for e in events]  # type: ignore[union-attr]
    if "device_offline" not in kinds:
        raise Broken(f"no device_offline alarm in the outbox: {kinds}")
    drops = [e.attrs for e in events if e.kind == "outbox_dropped"]  # type: ignore[union-attr]
    if not any(a["reason"] == "disk_full" for a in drops):
        raise Broken("the evicted telemetry was not announced")
    evicted = store["dropped_by"]["disk_full"]
    return f"{evicted} readings evicted for {kinds.count('device_offline')} alarms; recovered"


async def _disk_full(gw: Gateway) -> bool:
    return bool((await store_status(gw)).get("disk_full"))


async def _offline_alarms_committed(
    gw: Gateway, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    st = await gw.status()
    if seen is not None and st:
        seen[:] = [{k: st.get(k) for k in ("devices_online", "writer", "store")}]
    writer = st.get("writer") or {}
    offline = st.get("devices_total", 0) - st.get("devices_online", 0)
    if offline >= 3 and writer.get("committed_events", 0) >= 3 and writer.get("pending_events", 1) == 0:
        return st
    return None


async def _state_ok(gw: Gateway) -> bool:
    return (await store_status(gw)).get("state") == "ok"


@scenario(
    "store.bad_timestamp_record",
    area="store",
    promise="a record that cannot be stored (None/NaN/inf time, oversize text) is refused and "
    "counted at the writer's door; the records before and after it are committed",
)
async def bad_timestamp_record(work: Path) -> str:
    async with AsyncOutbox(work / "o.db", synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.01)
        task = asyncio.create_task(writer.run())
        try:
            bad = [math.nan, None, math.inf, "x"]
            for i, ts in enumerate(bad):
                writer.put_readings([Reading("m", "p", i, "", 1e9 + i), Reading("m", "p", -1, "", ts)])  # type: ignore[arg-type]
            writer.put_readings([Reading("m" * 5000, "p", 0, "", 1e9)])
            await until(lambda: writer.counters().committed_readings >= len(bad), "good readings committed")
            c = writer.counters()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if (c.committed_readings, c.rejected, c.failed_commits) != (len(bad), len(bad) + 1, 0):
            raise Broken(f"writer counters {c}")
    return f"{c.rejected} refused and counted, {c.committed_readings} committed, no failed commit"
