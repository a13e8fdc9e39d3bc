"""Hostile input from the network and on listening ports, against a real `citynerve run`, a real
Mosquitto and a fire panel printer port on a pty (docs/reliability.md, "Network input" and
"Listening ports")."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.drivers.serialio.guard import RAW_BURST, RAW_PER_S
from citynerve.gateway.api import Event, Reading
from citynerve.gateway.store import Lane, Outbox
from citynerve.hil.faults import Broken, scenario
from citynerve.hil.faults._inputs_support import (
    GATEWAY_ID,
    GatewayRun,
    PanelPort,
    basic,
    garbage_flood,
    get,
    open_many,
    platform_key,
    raise_nofile,
)
from citynerve.hil.platform import CommandSigner, MosquittoBroker

AREA = "Network input"
PORTS = "Listening ports"
FIRE_LINE = "首次火警  08/12/02 17:24  004回路004号  感烟探测器  一层大厅东侧\r\n".encode("gb2312")
LOG_BUDGET = 60  # log lines a whole attack may add (one summary per interval, not one per input)


@asynccontextmanager
async def _gateway(
    workdir: Path, *, broker: MosquittoBroker | None = None, **kw: Any
) -> AsyncIterator[tuple[GatewayRun, PanelPort]]:
    panel = PanelPort(workdir)
    if broker is not None:
        platform_key(workdir)
    gw = GatewayRun(workdir, panel, broker=broker.url if broker else None, **kw)
    gw.start()
    try:
        await gw.started()
        yield gw, panel
    except BaseException:
        await asyncio.to_thread(gw.stop)
        panel.close()
        raise
    code = await asyncio.to_thread(gw.stop)
    panel.close()
    if code not in (0, None):
        raise Broken(f"the gateway exited {code} on SIGTERM: {gw.tail()}")


def _signer(workdir: Path) -> CommandSigner:
    return CommandSigner.from_hmac_file(workdir / "platform.key")


async def _answered(client: aiomqtt.Client, command_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        async for msg in client.messages:
            body: dict[str, Any] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
            if body.get("command_id") == command_id:
                return body
    raise Broken("no answer")  # pragma: no cover - the timeout raises first


# ---------------------------------------------------------------- MQTT


@scenario(
    "inputs.nested_json_command",
    area=AREA,
    promise="100k-deep JSON on the command and ack topics is refused; the session stays up and "
    "a signed command is still answered",
)
async def nested_json_command(workdir: Path) -> str:
    with MosquittoBroker(workdir=workdir) as broker:
        async with _gateway(workdir, broker=broker, e2e=True, commands=True) as (gw, _):
            await gw.uplink_connected()
            async with aiomqtt.Client(broker.host, broker.port) as attacker:
                await attacker.subscribe(f"citynerve/{GATEWAY_ID}/cmd/result", qos=1)
                for topic in ("cmd", "ack"):
                    for payload in (b"[" * 100_000, b'{"a":' * 20_000, b"[" * 2000 + b"]" * 2000):
                        await attacker.publish(f"citynerve/{GATEWAY_ID}/{topic}", payload, qos=1)
                cmd = _signer(workdir).command(GATEWAY_ID, "resend_inventory")
                await attacker.publish(f"citynerve/{GATEWAY_ID}/cmd", CommandSigner.payload(cmd), qos=1)
                answer = await _answered(attacker, cmd["id"])
            up = (await gw.status())["uplink"]
            if answer["outcome"] != "ok":
                raise Broken(f"the signed command was not carried out: {answer}")
            if up["reconnects"] != 0 or not up["connected"]:
                raise Broken(
                    f"the session ended: {up['reconnects']} reconnects, last error {up['last_error']}"
                )
            return f"6 nested payloads refused, session kept (acks refused {up['extra']['acks_refused']})"


@scenario(
    "inputs.forged_ack",
    area=AREA,
    promise="an e2e ack that is unsigned, signed with another key or for another message deletes "
    "nothing; the platform's signed ack does",
)
async def forged_ack(workdir: Path) -> str:
    with MosquittoBroker(workdir=workdir) as broker:
        async with _gateway(workdir, broker=broker, e2e=True) as (gw, panel):
            await gw.uplink_connected()
            panel.write(FIRE_LINE)  # an event row for the platform (which is not listening)

            async def sent() -> bool:
                up = (await gw.status())["uplink"]
                return bool(up["sent_seq"]["event"] > 0)

            await gw.wait_until("the alarm to be sent", sent)
            up = (await gw.status())["uplink"]
            seq = up["sent_seq"]["event"]
            ack = {"schema": "citynerve.ack/1", "gateway_id": GATEWAY_ID, "lane": "event", "seq": seq}
            signer = _signer(workdir)
            forged = [
                ack,
                CommandSigner(hmac_key=os.urandom(32)).sign_ack(ack),
                signer.sign(ack),  # the platform's key, a command's signing context
                {**signer.sign_ack({**ack, "seq": 0}), "seq": seq},  # signature of another ack
            ]
            async with aiomqtt.Client(broker.host, broker.port) as attacker:
                for body in forged:
                    await attacker.publish(f"citynerve/{GATEWAY_ID}/ack", json.dumps(body), qos=1)

                async def refused() -> bool:
                    return bool((await gw.status())["uplink"]["extra"]["acks_refused"] >= len(forged))

                await gw.wait_until("the forged acks to be refused", refused)
                await asyncio.sleep(0.5)  # past the ack loop's interval
                rows = _rows((await gw.status())["store"], "event")
                if rows < 1 or (await gw.status())["uplink"]["ack_seq"]["event"] != 0:
                    raise Broken(f"a forged ack deleted rows: {rows} event rows left")
                await attacker.publish(f"citynerve/{GATEWAY_ID}/ack", json.dumps(signer.sign_ack(ack)), qos=1)

                async def deleted() -> bool:
                    return bool((await gw.status())["uplink"]["ack_seq"]["event"] == seq)

                await gw.wait_until("the signed ack to delete", deleted)
            return f"{len(forged)} forged acks refused, {rows} event row(s) kept; the signed ack deleted them"


def _rows(store: dict[str, Any], lane: str) -> int:
    for entry in store.get("lanes", []):
        if entry.get("lane") == lane:
            return int(entry["rows"])
    raise Broken(f"no {lane} lane in the store status: {store}")


@scenario(
    "inputs.junk_command_flood",
    area=AREA,
    promise="2000 junk commands are counted and answered/logged once per interval; a signed "
    "command is still carried out",
)
async def junk_command_flood(workdir: Path) -> str:
    n = 2000
    with MosquittoBroker(workdir=workdir) as broker:
        async with _gateway(workdir, broker=broker, commands=True) as (gw, _):
            await gw.uplink_connected()
            lines_before = gw.log_lines()
            forged = CommandSigner(hmac_key=os.urandom(32)).command(
                GATEWAY_ID, "restart_bus", {"bus_id": "x"}
            )
            junk = [b"rm -rf /", b"{}", b"\xff\xfe", CommandSigner.payload(forged)]
            async with aiomqtt.Client(broker.host, broker.port) as attacker:
                await attacker.subscribe(f"citynerve/{GATEWAY_ID}/cmd/result", qos=1)
                for i in range(n):
                    await attacker.publish(f"citynerve/{GATEWAY_ID}/cmd", junk[i % len(junk)], qos=0)

                async def counted() -> bool:
                    return bool((await gw.status())["uplink"]["commands_rejected"] >= n)

                await gw.wait_until("the junk to be counted", counted, 60.0)
                cmd = _signer(workdir).command(GATEWAY_ID, "resend_inventory")
                await attacker.publish(f"citynerve/{GATEWAY_ID}/cmd", CommandSigner.payload(cmd), qos=1)
                answers: list[dict[str, Any]] = []
                async with asyncio.timeout(20):
                    async for msg in attacker.messages:
                        answers.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]
                        if answers[-1].get("command_id") == cmd["id"]:
                            break
            up = (await gw.status())["uplink"]
            added = gw.log_lines() - lines_before
            metrics = await asyncio.to_thread(_metrics_text, gw.web_port)
            unanswered = up["extra"]["commands_unanswered"]  # the flood is over: both figures stay
            held_back = f'citynerve_uplink_inbound_refused_total{{kind="command_unanswered"}} {unanswered}'
            if held_back not in metrics:
                raise Broken(f"/metrics does not count the junk held back ({held_back!r} missing)")
            if answers[-1]["outcome"] != "ok":
                raise Broken(f"the signed command was not carried out: {answers[-1]}")
            if len(answers) - 1 > 5 or added > LOG_BUDGET:
                raise Broken(f"junk not rate limited: {len(answers) - 1} answers, {added} log lines")
            return (
                f"{n} junk commands: {len(answers) - 1} answers, {added} log lines, "
                f"{up['extra']['commands_unanswered']} counted only"
            )


# ---------------------------------------------------------------- the status page


@scenario(
    "inputs.statuspage_connection_flood",
    area=AREA,
    promise="2000 connections to the page (gateway at RLIMIT_NOFILE 256): the page answers a "
    "technician afterwards, the uplink reconnects during the flood, the log stays small",
    timeout_s=180.0,
)
async def statuspage_connection_flood(workdir: Path) -> str:
    raise_nofile()
    with MosquittoBroker(workdir=workdir) as broker:
        async with _gateway(workdir, broker=broker, nofile=256) as (gw, _):
            await gw.uplink_connected()
            lines_before = gw.log_lines()
            held = await asyncio.to_thread(open_many, gw.web_port, 2000)
            try:
                # Connections the listen backlog dropped never reach the page (nor cost it a
                # descriptor); wait until what does arrive has arrived.
                last, seen = -1, await _web_refused(gw)
                while seen != last:
                    await asyncio.sleep(1.0)
                    last, seen = seen, await _web_refused(gw)
                if seen < 500:
                    raise Broken(f"only {seen} of the flood's connections reached the page")
                # A broker crash: the uplink needs a new descriptor while the flood holds its sockets.
                broker.kill()
                await asyncio.to_thread(broker.start)

                async def reconnected() -> bool:
                    up = (await gw.status())["uplink"]
                    return bool(up["connected"] and up["reconnects"] >= 1)

                await gw.wait_until("the uplink to reconnect during the flood", reconnected, 60.0)
                code = 0
                deadline = time.monotonic() + 15.0  # the flood's slots time out within 5 s
                while code != 200 and time.monotonic() < deadline:
                    code = await get(gw.web_port, "/", auth=basic(), source="127.0.0.2")
                    if code != 200:
                        await asyncio.sleep(0.5)
            finally:
                for s in held:
                    s.close()
            if code != 200:
                raise Broken(f"the page did not answer a technician during the flood (last {code})")
            # Afterwards the flooding address itself is served again (its slots were freed).
            again = 0
            deadline = time.monotonic() + 15.0
            while again != 200 and time.monotonic() < deadline:
                again = await get(gw.web_port, "/", auth=basic())
                if again != 200:
                    await asyncio.sleep(0.5)
            if again != 200:
                raise Broken(f"the page did not answer from the flood's address afterwards ({again})")
            added = gw.log_lines() - lines_before
            if added > LOG_BUDGET:
                raise Broken(f"the log grew by {added} lines during the flood")
            refused = await _web_refused(gw)
            return (
                f"2000 connections ({refused} refused unread): page answered 200, uplink reconnected, "
                f"{added} log lines"
            )


async def _web_refused(gw: GatewayRun) -> int:
    """Connections the page refused over its limits, from its /metrics (asked from another address)."""
    text = await asyncio.to_thread(_metrics_text, gw.web_port)
    for line in text.splitlines():
        if line.startswith('citynerve_web_refused_total{reason="busy"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def _metrics_text(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.9", 0)) as s:
        s.sendall(
            f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {basic()}\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


@scenario(
    "inputs.statuspage_slowloris",
    area=AREA,
    promise="connections that send their request a byte a second are cut within the request "
    "deadline; other clients are served meanwhile",
)
async def statuspage_slowloris(workdir: Path) -> str:
    async with _gateway(workdir) as (gw, _):
        slow = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", gw.web_port), source_address=("127.0.0.3", 0))
            s.setblocking(False)
            slow.append(s)
        started = time.monotonic()
        open_ = set(range(len(slow)))
        served = await get(gw.web_port, "/healthz", auth=basic())
        while open_ and time.monotonic() - started < 15.0:
            for i in list(open_):
                try:
                    slow[i].send(b"G")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    open_.discard(i)  # cut by the server
                    continue
                try:
                    if slow[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
            await asyncio.sleep(1.0)
        took = time.monotonic() - started
        for s in slow:
            s.close()
        if served != 200:
            raise Broken(f"another client was not served during the attack ({served})")
        if open_:
            raise Broken(f"{len(open_)} slow connections still open after {took:.0f} s")
        return f"8 slow connections cut after {took:.1f} s; another client served meanwhile"


@scenario(
    "inputs.login_guessing",
    area=AREA,
    promise="password guesses are throttled per client (429 with Retry-After) and logged in a "
    "bounded number of lines; the technician's own login still works",
)
async def login_guessing(workdir: Path) -> str:
    async with _gateway(workdir) as (gw, _):
        lines_before = gw.log_lines()
        codes = [
            await get(gw.web_port, "/api/status", auth=basic(password=f"guess{i}"), source="127.0.0.4")
            for i in range(40)
        ]
        legit = await get(gw.web_port, "/api/status", auth=basic(), source="127.0.0.5")
        right_but_throttled = await get(gw.web_port, "/api/status", auth=basic(), source="127.0.0.4")
        added = gw.log_lines() - lines_before
        if codes != [401] * 6 + [429] * 34:  # 5 free failures, then blocked while it keeps trying
            raise Broken(f"guesses not throttled: {codes}")
        if legit != 200:
            raise Broken(f"the technician was locked out ({legit})")
        if right_but_throttled != 429:
            raise Broken("the guessing client got in while throttled")
        if added > 5:
            raise Broken(f"{added} log lines for 40 guesses")
        return f"40 guesses: {codes.count(401)} x 401 then {codes.count(429)} x 429, {added} log lines"


@scenario(
    "inputs.statuspage_local_user",
    area=AREA,
    promise="without a password the loopback page serves only root, the gateway's user and group "
    "(the control socket's rule); another local user gets 403",
)
async def statuspage_local_user(workdir: Path) -> str:
    if os.geteuid() != 0:
        raise Broken("this scenario switches to another local user and needs root")
    async with _gateway(workdir, password=False) as (gw, _):
        own = await get(gw.web_port, "/healthz")
        probe = (
            "import encodings.idna, os, socket\n"  # imported before the switch: nobody cannot read them
            "os.setgid(65534); os.setuid(65534)\n"
            f"s = socket.create_connection(('127.0.0.1', {gw.web_port}))\n"
            f"s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1:{gw.web_port}\\r\\n\\r\\n')\n"
            "print(s.recv(100).split(b' ')[1].decode())\n"
        )
        other = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
        )
        if own != 200:
            raise Broken(f"root was refused ({own})")
        if other.stdout.strip() != "403":
            raise Broken(f"user nobody got {other.stdout.strip() or other.stderr[-300:]}")
        return "root 200, user nobody 403"


# ---------------------------------------------------------------- listening ports


@scenario(
    "inputs.serial_garbage_flood",
    area=PORTS,
    promise="garbage at full speed on the fire panel port for 3 s adds no garbage rows (unparsed "
    "text at most 1/s), is counted in status and metrics, logs one line per minute; a real fire "
    "alarm in the middle is raised",
)
async def serial_garbage_flood(workdir: Path) -> str:
    async with _gateway(workdir) as (gw, panel):
        lines_before = gw.log_lines()
        started = time.monotonic()
        flood = garbage_flood(panel, 3.0)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(panel.write, b"\r\n" + FIRE_LINE)  # the panel's real alarm, mid-flood
        await asyncio.to_thread(flood.join)

        async def counted() -> bool:
            bus = (await gw.status())["buses"][0]
            return bool(bus["input"].get("garbage_lines", 0) > 100)

        await gw.wait_until("the garbage to be counted", counted)
        bus = (await gw.status())["buses"][0]
        metrics = await asyncio.to_thread(_metrics_text, gw.web_port)
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "citynerve.gateway.cli", "status", "-c", str(gw.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        added = gw.log_lines() - lines_before
    # Unparsed text may be stored at the raw rate over the whole run (burst first), never more.
    budget = RAW_BURST + RAW_PER_S * (time.monotonic() - started) + 1
    readings, events = _outbox(gw.db)
    raw = [r for r in readings if r.point == "raw"]
    fires = [e for e in events if e.kind in ("fire", "smoke")]
    sent = flood.sent
    if not fires:
        raise Broken("the real fire alarm in the flood was not raised")
    if len(raw) > budget:
        raise Broken(f"{len(raw)} raw rows stored from {sent} bytes of garbage (budget {budget:.0f})")
    if added > 10:
        raise Broken(f"the log grew by {added} lines")
    if 'citynerve_bus_garbage_lines_total{bus="fire-panel"' not in metrics:
        raise Broken("/metrics does not show the garbage")
    if "bus fire-panel refused input: garbage bytes" not in shown.stdout:
        raise Broken(f"`citynerve status` does not show the garbage: {shown.stdout[-500:]}")
    return (
        f"{sent // 1024} KiB of garbage: {bus['input']['garbage_lines']} lines counted, "
        f"{len(raw)} raw rows, fire alarm raised, {added} log lines"
    )


def _outbox(db: Path) -> tuple[list[Reading], list[Event]]:
    ob = Outbox(db)
    try:
        readings = [r.record for r in ob.peek(Lane.TELEMETRY, limit=100_000)]
        events = [r.record for r in ob.peek(Lane.EVENT, limit=100_000)]
    finally:
        ob.close()
    return [r for r in readings if isinstance(r, Reading)], [e for e in events if isinstance(e, Event)]
