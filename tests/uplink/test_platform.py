"""The reference platform: shared subscriptions across instances, gap detection, the demo broker
and the platform view."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiomqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import (
    Arrival,
    MosquittoBroker,
    PlatformConsumer,
    PlatformStore,
    format_arrival,
    print_platform_view,
    start_demo_broker,
)
from tests.uplink.conftest import (
    INVENTORY,
    PLATFORM_SIGNER,
    alarm,
    platform_key_file,
    readings,
    upstream,
    wait_for,
)

GW = "gw-plat"
REPO = Path(__file__).resolve().parents[2]


def _msg(prev: int, seqs: list[int], epoch: str | None = None) -> dict[str, object]:
    return {
        **({} if epoch is None else {"epoch": epoch}),
        "gateway_id": GW,
        "lane": "telemetry",
        "prev_seq": prev,
        "seq": seqs[-1],
        "first_seq": seqs[0],
        "readings": [
            {"seq": s, "device_id": "d", "point": "p", "value": s, "unit": "", "ts_ms": s, "quality": "good"}
            for s in seqs
        ],
    }


def test_store_gap_duplicate_and_out_of_order(tmp_path: Path) -> None:
    st = PlatformStore(tmp_path / "p.sqlite")
    assert st.ingest(_msg(0, [1, 2])).contiguous == 2
    got = st.ingest(_msg(5, [7, 9]))  # seqs 3..5 belong to a message that has not arrived
    assert got.gap and got.contiguous == 2
    assert st.lane(GW, "telemetry").open_gap == (2, 5)  # type: ignore[union-attr]
    got = st.ingest(_msg(2, [3, 5]))  # the late message closes the gap
    assert not got.gap and got.contiguous == 9
    got = st.ingest(_msg(2, [3, 5]))
    assert got.duplicates == 2 and got.new_rows == 0
    v = st.lane(GW, "telemetry")
    assert v is not None and (v.rows, v.duplicates, v.gaps_seen, v.open_gap) == (6, 2, 1, None)
    st.close()


def test_a_new_store_epoch_is_its_own_chain(tmp_path: Path) -> None:
    # The gateway's outbox was lost: a new epoch, whose seqs may repeat the old epoch's (an older
    # copy restored) and whose chain starts at prev_seq 0. No false duplicates, no phantom gap.
    st = PlatformStore(tmp_path / "p.sqlite")
    assert st.ingest(_msg(0, [1, 2, 3], epoch="aa")).contiguous == 3
    got = st.ingest(_msg(0, [2, 3, 4], epoch="bb"))
    assert (got.epoch, got.new_rows, got.duplicates, got.gap, got.contiguous) == ("bb", 3, 0, False, 4)
    assert st.ingest(_msg(4, [5], epoch="bb")).contiguous == 5
    assert st.ingest(_msg(3, [9], epoch="aa")).contiguous == 9  # a late message of the old epoch
    old, new = st.lane(GW, "telemetry", "aa"), st.lane(GW, "telemetry")
    assert old is not None and new is not None and new.epoch == "bb"
    assert (old.rows, old.contiguous, new.rows, new.contiguous, new.duplicates, new.open_gap) == (
        4,
        9,
        4,
        5,
        0,
        None,
    )
    assert st.ingest(_msg(0, [1], epoch=None)).epoch == ""  # a gateway from before epochs
    st.close()


async def test_shared_subscription_spreads_load_and_dedupes_in_one_store(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    db = tmp_path / "shared.sqlite"
    kw: dict[str, Any] = {"db_path": db, "group": "g1", "ack_signer": PLATFORM_SIGNER}
    a = PlatformConsumer(host=broker.host, port=broker.port, consumer_id="inst-a", **kw)
    b = PlatformConsumer(host=broker.host, port=broker.port, consumer_id="inst-b", **kw)
    async with a, b:
        await a.wait_connected()
        await b.wait_connected()
        await outbox.append(readings(2000), [alarm(i) for i in range(20)])
        cfg = upstream(broker, e2e_ack=True, max_batch_readings=20)
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            await wait_for(lambda: _drained(outbox), timeout_s=30)
        lanes = await a.query(lambda s: {v.lane: v for v in s.lanes()})
        # Out-of-order arrival across instances shows as transient gaps that close: none stays open.
        assert lanes["telemetry"].rows == 2000 and lanes["telemetry"].open_gap is None
        assert lanes["telemetry"].contiguous == max(await a.query(lambda s: s.reading_seqs(GW)))
        assert lanes["event"].rows == 20
        # Both instances took part: the broker shared the messages out.
        assert a.messages > 10 and b.messages > 10


async def _drained(outbox: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await outbox.stats()).lanes)


async def test_embedded_demo_broker_and_view(outbox: AsyncOutbox, tmp_path: Path) -> None:
    host, port, stop = await start_demo_broker(embedded=True)
    lines: list[str] = []
    try:
        c = PlatformConsumer(
            host=host,
            port=port,
            db_path=tmp_path / "demo.sqlite",
            group=None,
            protocol="3.1.1",
            on_arrival=lambda a: lines.extend(format_arrival(a)),
            ack_signer=PLATFORM_SIGNER,
        )
        async with c:
            await c.wait_connected()
            await outbox.append(readings(30), [alarm(1)])
            cfg = upstream(f"mqtt://{host}:{port}", protocol="3.1.1", e2e_ack=True)
            async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
                await wait_for(lambda: _drained(outbox), timeout_s=20)
            out = io.StringIO()
            await c.query(lambda s: print_platform_view(s, Console(file=out, width=120)))
    finally:
        await stop()
    text = "\n".join(lines)
    assert "ALARM" in text and "smoke" in text and "wm-1.flow=0.0m3/h" in text
    assert "City platform" in out.getvalue() and GW in out.getvalue()


def test_format_arrival_marks_gaps_and_duplicates() -> None:
    from citynerve.hil.platform.store import Ingested

    a = Arrival("telemetry", GW, _msg(5, [7]), Ingested("telemetry", 0, 1, True, 2, 2))  # type: ignore[arg-type]
    (line,) = format_arrival(a)
    assert "GAP" in line and "1 dup" in line


def _has_lane(db: Path) -> bool:
    st = PlatformStore(db)
    try:
        return st.lane(GW, "telemetry") is not None
    finally:
        st.close()


def _spawn_consumer(broker: MosquittoBroker, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citynerve.hil.platform",
            "consume",
            "--broker",
            broker.url,
            "--db",
            str(db),
            "--no-e2e",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_cli_consume_and_view(broker: MosquittoBroker, tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    proc = _spawn_consumer(broker, db)
    try:
        body = _msg(0, [1, 2])
        body.update(
            {"schema": "citynerve.telemetry/1", "count": 2, "ts": "2026-01-01T00:00:00.000Z", "ts_ms": 1}
        )
        async with aiomqtt.Client(broker.host, broker.port) as c:
            for _ in range(100):  # until the consumer has subscribed
                await c.publish(f"citynerve/{GW}/telemetry", json.dumps(body), qos=1)
                await asyncio.sleep(0.1)
                if db.exists() and _has_lane(db):
                    break
    finally:
        proc.terminate()
        out = await asyncio.to_thread(lambda: proc.communicate(timeout=20)[0])
    assert "data" in out
    # SIGTERM (systemd, docker stop) is an orderly stop, as Ctrl-C is: the store closed, exit 0.
    assert proc.returncode == 0 and "stopped" in out, (proc.returncode, out)
    view = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "citynerve.hil.platform", "view", "--db", str(db), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lanes = json.loads(view.stdout)["lanes"]
    assert lanes[0]["gateway_id"] == GW and lanes[0]["rows"] == 2


def test_cli_command_no_gateway_answers_says_timed_out(broker: MosquittoBroker) -> None:
    # A TimeoutError's text is empty: the line read "error: no result from gw-plat: " and stopped.
    out = subprocess.run(
        [
            *(sys.executable, "-m", "citynerve.hil.platform", "command", "--broker", broker.url),
            *("--gateway", GW, "--hmac-key-file", str(platform_key_file()), "--timeout", "0.5"),
            *("read_point", "device_id=d", "point=p"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stderr.strip()) == (1, f"error: no result from {GW}: timed out")


async def test_a_consumer_restarted_without_a_client_id_gets_every_message(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    # `consume` without --client-id takes a random id at each start. Its session outlived the
    # process (expiry 3600 s) and stayed in the `$share/platform` group as a member no one reads:
    # Mosquitto handed it every other message, so the next instance saw a gap at every other
    # message (with --no-e2e those rows were lost). Killed -9 here, as a crash would.
    def telemetry(prev: int, seqs: list[int]) -> str:
        body = _msg(prev, seqs)
        body.update({"schema": "citynerve.telemetry/1", "count": len(seqs), "ts": "2026-01-01T00:00:00.000Z"})
        return json.dumps({**body, "ts_ms": 1})

    first_db = tmp_path / "first.sqlite"
    proc = _spawn_consumer(broker, first_db)
    try:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            for _ in range(100):  # until the consumer has subscribed
                await c.publish(f"citynerve/{GW}/telemetry", telemetry(0, [1]), qos=1)
                await asyncio.sleep(0.1)
                if first_db.exists() and _has_lane(first_db):
                    break
    finally:
        proc.kill()
        await asyncio.to_thread(proc.communicate, timeout=10)
    assert _has_lane(first_db)
    async with PlatformConsumer(
        host=broker.host, port=broker.port, db_path=tmp_path / "next.sqlite", e2e_ack=False
    ) as nxt:
        await nxt.wait_connected()
        async with aiomqtt.Client(broker.host, broker.port) as c:
            for s in range(2, 12):
                await c.publish(f"citynerve/{GW}/telemetry", telemetry(s - 1, [s]), qos=1)
        for _ in range(100):  # a member left behind was handed about half of them
            if nxt.messages >= 10:
                break
            await asyncio.sleep(0.1)
        lane = await nxt.query(lambda st: st.lane(GW, "telemetry"))
    assert lane is not None and lane.rows == 10, lane


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12),
    stride=st.integers(1, 3),
    data=st.data(),
)
def test_store_chain_any_arrival_order(sizes: list[int], stride: int, data: st.DataObject) -> None:
    """Messages of one lane (seqs spaced by `stride`, as when the other lane takes seqs in between)
    arrive in any order, some twice: the store ends with every row once, contiguous to the last seq,
    no open gap; before the last missing message arrives, a gap is open."""
    msgs, seq, prev = [], 0, 0
    for n in sizes:
        seqs = [seq + stride * (i + 1) for i in range(n)]
        msgs.append(_msg(prev, seqs))
        seq = prev = seqs[-1]
    order = data.draw(st.permutations(range(len(msgs))))
    dups = data.draw(st.lists(st.sampled_from(range(len(msgs))), max_size=4))
    with tempfile.TemporaryDirectory() as d:
        st_ = PlatformStore(Path(d) / "p.sqlite")
        for i in [*order, *dups]:
            st_.ingest(msgs[i])
        v = st_.lane(GW, "telemetry")
        assert v is not None
        assert (v.rows, v.contiguous, v.open_gap) == (sum(sizes), seq, None)
        assert v.duplicates == sum(sizes[i] for i in dups)
        st_.close()
    if len(msgs) > 1:  # leave one message out: its range is reported as the open gap
        missing = data.draw(st.sampled_from(range(len(msgs))))
        with tempfile.TemporaryDirectory() as d:
            st_ = PlatformStore(Path(d) / "p.sqlite")
            for i in order:
                if i != missing:
                    st_.ingest(msgs[i])
            v = st_.lane(GW, "telemetry")
            assert v is not None
            gap_from = msgs[missing]["prev_seq"]
            if missing == len(msgs) - 1:
                assert v.open_gap is None and v.contiguous == gap_from  # the tail is simply not here yet
            else:
                assert v.open_gap == (gap_from, msgs[missing]["seq"]) and v.contiguous == gap_from
            st_.close()


async def test_consumer_survives_garbage(broker: MosquittoBroker, tmp_path: Path) -> None:
    c = PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp_path / "g.sqlite", group=None)
    async with c:
        await c.wait_connected()
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            for payload in (b"\xff", b"[]", b"{}", b'{"gateway_id":"x","lane":"telemetry"}', b"null"):
                await pub.publish(f"citynerve/{GW}/telemetry", payload, qos=1)
            body = _msg(0, [1])
            await pub.publish(f"citynerve/{GW}/telemetry", json.dumps(body), qos=1)
            await wait_for(lambda: _has(c))
    assert c.invalid == 5


async def _has(c: PlatformConsumer) -> bool:
    return await c.query(lambda s: s.lane(GW, "telemetry")) is not None


def test_the_live_view_prints_gateway_text_as_it_is() -> None:
    """A fire panel's location or a device id with brackets ("[/]", "[bold]") is shown literally,
    never read as rich markup (a "[/]" raised MarkupError and ended the consumer's live view)."""
    from citynerve.hil.platform.consumer import Arrival

    event = {
        "ts_ms": 0, "device_id": "panel[/]", "kind": "fire_alarm", "state": "raised", "severity": "CRITICAL",
        "severity_level": 4, "seq": 7, "message": "loop 1 zone 3 [/] stairwell [bold]B[/bold]",
    }  # fmt: skip
    reading = {"device_id": "m[1]", "point": "p", "value": "[/]", "unit": "", "ts_ms": 0, "quality": "good"}
    arrivals = [
        Arrival("events", "gw[x]", {"events": [event]}, None),
        Arrival("telemetry", "gw[x]", {"readings": [reading], "first_seq": 1, "seq": 1}, None),
        Arrival("status", "gw[x]", {"state": "[/]online", "backlog": {"[/]": 1}}, None),
        Arrival("inventory", "gw[x]", {"devices": []}, None),
        Arrival("result", "gw[x]", {"command_id": "[/]", "outcome": "ok", "reason": "[red]"}, None),
    ]
    out = io.StringIO()
    console = Console(file=out, width=200)
    for a in arrivals:
        for line in format_arrival(a):
            console.print(line)
    text = out.getvalue()
    assert "loop 1 zone 3 [/] stairwell [bold]B[/bold]" in text and "gw[x]/panel[/]" in text, text
    assert "m[1].p=[/]" in text and "[/]online" in text and "[red]" in text, text
