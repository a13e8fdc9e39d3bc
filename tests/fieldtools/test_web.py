"""The status server over real sockets (HTTP edge cases, auth, robustness) and /metrics checked by
prometheus_client's own parser and a strict line grammar, with a running gateway and a real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.web import StatusServer, WebConfig, WebServerError, is_loopback
from citynerve.gateway.web.metrics import Exposition
from citynerve.hil.platform import MosquittoBroker, find_mosquitto
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import gateway_toml, run_gateway, wait_for


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items() if k != "Host")
    host = (headers or {}).pop("Host", f"127.0.0.1:{port}")
    return await request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())


# -- config -----------------------------------------------------------------------------------------


def test_web_config_defaults_and_exposure_rule() -> None:
    cfg = WebConfig()
    assert cfg.enabled is False and cfg.bind == "127.0.0.1" and not cfg.auth_required
    with pytest.raises(ValidationError, match="password_file"):
        WebConfig(bind="0.0.0.0")
    assert WebConfig(bind="0.0.0.0", password_file=Path("/etc/citynerve/web.pw")).auth_required
    assert WebConfig(bind="::1").bind == "::1"
    assert [
        is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost", "0.0.0.0", "192.168.1.5")
    ] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


# -- HTTP -------------------------------------------------------------------------------------------


async def test_routes_and_http_edges(gateway: Gateway) -> None:
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as server:
        assert server.port
        port = server.port
        status, headers, body = await get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in headers["content-security-policy"]
        assert b"/static/status.js" in body and b"http" not in body.replace(b"http-equiv", b"")
        status, headers, body = await get(port, "/static/status.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        status, headers, body = await get(port, "/api/status?t=1")
        state = json.loads(body)
        assert status == 200 and headers["cache-control"] == "no-store"
        assert state["gateway"]["gateway_id"] == "gw-test-0001"
        assert {g["floor"] for g in state["groups"]} == {"B1", "1", "2", "3"}
        status, _, body = await get(port, "/healthz")
        assert status == 200 and "devices_total" in json.loads(body)

        status, headers, body = await request(port, b"HEAD / HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        assert (await request(port, b"POST /api/status HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))[0] == 405
        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/../../etc/passwd"))[0] == 404
        assert (await request(port, b"hello\r\n\r\n"))[0] == 400
        assert (await request(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"))[0] == 400
        big = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 200) for i in range(60)) + b"\r\n"
        assert (await request(port, big))[0] == 431
        assert (await request(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"))[0] == 431

        # A client that connects and says nothing does not hold up anyone else.
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        assert (await get(port, "/healthz"))[0] == 200
        idle.close()

        # Without a password the page answers this machine's names only (DNS rebinding).
        assert (await get(port, "/api/status", {"Host": "evil.example:8080"}))[0] == 403
        assert (await get(port, "/api/status", {"Host": f"localhost:{port}"}))[0] == 200
        assert (await get(port, "/api/status", {"Host": f"[::1]:{port}"}))[0] == 200


async def test_too_many_connections_get_busy(gateway: Gateway) -> None:
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as server:
        assert server.port
        idle = [(await asyncio.open_connection("127.0.0.1", server.port))[1] for _ in range(40)]
        # Over the per-client limit the rest are refused before a byte is read.
        per = server.limits()["max_per_client"]
        limits = server.limits
        await wait_for(lambda: limits()["open"] == per and limits()["refused_busy"] >= 40 - per, 5)
        try:  # refused unread: a 503 when the request was not sent yet, else the close resets it
            status, headers, _ = await get(server.port, "/healthz")
            assert status == 503 and headers["retry-after"] == "5"
        except ConnectionError:
            pass
        assert server.limits()["refused_busy"] >= 40 - per + 1
        for w in idle:
            w.close()
        await wait_for(lambda: server.limits()["open"] == 0, 15)
        assert (await get(server.port, "/healthz"))[0] == 200


async def test_password_when_exposed(gateway: Gateway, short_dir: Path) -> None:
    pw = short_dir / "web.pw"
    pw.write_text("correct horse\n")
    cfg = WebConfig(enabled=True, bind="127.0.0.1", port=0, password_file=pw, username="tech")
    async with StatusServer(cfg, gateway) as server:
        assert server.port

        def basic(user: str, password: str) -> dict[str, str]:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

        status, headers, body = await get(server.port, "/metrics")
        assert status == 401 and headers["www-authenticate"].startswith("Basic")
        assert b"citynerve_" not in body
        for bad in (basic("tech", "wrong"), basic("admin", "correct horse"), {"Authorization": "Basic !!!"},
                    {"Authorization": "Bearer x"}):  # fmt: skip
            assert (await get(server.port, "/api/status", bad))[0] == 401
        status, _, body = await get(server.port, "/metrics", basic("tech", "correct horse"))
        assert status == 200 and b"citynerve_bus_transactions_total" in body


async def test_cannot_serve_is_typed_and_run_returns(gateway: Gateway, short_dir: Path) -> None:
    missing = WebConfig(enabled=True, port=0, password_file=short_dir / "absent.pw")
    with pytest.raises(WebServerError, match="password_file"):
        await StatusServer(missing, gateway).start()
    await asyncio.wait_for(StatusServer(missing, gateway).run(), 5)  # logs, returns: the gateway goes on
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as first:
        taken = WebConfig(enabled=True, port=first.port or 0)
        with pytest.raises(WebServerError, match="cannot listen"):
            await StatusServer(taken, gateway).start()
    await StatusServer(WebConfig(enabled=False), gateway).run()  # disabled: returns at once


async def test_a_failing_status_is_a_500_not_a_crash(gateway: Gateway) -> None:
    class Broken(Gateway):
        async def status(self) -> dict[str, Any]:
            raise RuntimeError("boom")

    broken = Broken(gateway.config)
    async with StatusServer(WebConfig(enabled=True, port=0), broken) as server:
        assert server.port
        assert (await get(server.port, "/api/status"))[0] == 500
        assert (await get(server.port, "/"))[0] == 200


# -- metrics ----------------------------------------------------------------------------------------

SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


def strict_parse(text: str) -> dict[str, str]:
    """Line grammar of the text format 0.0.4; returns family -> type. Fails on anything else."""
    types: dict[str, str] = {}
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text[:-1].split("\n"):  # only \n ends a line (splitlines would split on \x1e too)
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"second HELP for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped")
            assert name not in types, f"second TYPE for {name}"
            types[name] = kind
        else:
            assert SAMPLE.match(line), f"bad sample line: {line!r}"
            name = line.split("{")[0].split()[0]
            family = re.sub(r"_(sum|count)$", "", name) if name.endswith(("_sum", "_count")) else name
            assert family in types or name in types, f"sample before its TYPE: {line!r}"
    return types


async def test_metrics_parse_and_follow_the_bus(gateway: Gateway, building: ModbusBuilding) -> None:
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as server:
        assert server.port
        building.trigger_smoke(12)
        building.silence(3)
        await wait_for(lambda: gateway.owners["tcp-1"].counters.timeouts > 0, 10)
        await asyncio.sleep(1.1)  # past the status cache
        status, headers, body = await get(server.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        types = strict_parse(text)
        assert types["citynerve_bus_transactions_total"] == "counter"
        assert types["citynerve_bus_latency_seconds"] == "summary"
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
        }
        bus = (("bus", "tcp-1"), ("protocol", "modbus_tcp"))
        assert samples[("citynerve_bus_transactions_total", bus)] > 0
        assert samples[("citynerve_bus_errors_total", (*bus[:1], ("kind", "timeout"), bus[1]))] > 0
        assert samples[("citynerve_bus_latency_seconds_count", bus)] > 0
        assert samples[("citynerve_device_online", (("bus", "tcp-1"), ("device", "wm-3")))] == 0
        assert samples[("citynerve_device_online", (("bus", "tcp-1"), ("device", "wm-2")))] == 1
        wm3, wm2 = (("bus", "tcp-1"), ("device", "wm-3")), (("bus", "tcp-1"), ("device", "wm-2"))
        assert samples[("citynerve_device_state", (*wm3, ("state", "offline")))] == 1
        assert samples[("citynerve_device_state", (*wm2, ("state", "online")))] == 1
        assert samples[("citynerve_device_window_failures", (*wm3, ("kind", "timeout")))] >= 1
        assert samples[("citynerve_device_window_attempts", wm2)] >= 1
        # the page's data: each card carries the verdict's state and reason in words
        page = json.loads((await get(server.port, "/api/status"))[2])
        cards = {d["id"]: d for g in page["groups"] for d in g["devices"]}
        assert cards["wm-3"]["state"] == "offline" and "configured address 3" in cards["wm-3"]["reason"]
        assert page["time"]["gateway_utc"] and page["buses"][0]["verdict"]["cause"] == "device_silent"
        assert samples[("citynerve_outbox_rows", (("lane", "telemetry"),))] >= 0
        assert ("citynerve_outbox_oldest_age_seconds", (("lane", "event"),)) in samples
        assert samples[("citynerve_rule_evaluations_total", ())] > 0
        assert samples[("citynerve_events_total", ())] >= 1
        # Every active alarm, whatever raised it: the smoke rules and the bus owner's offline verdict.
        assert gateway.rules is not None
        rules_active = gateway.rules.active()
        assert rules_active and {a.device_id for a in rules_active} == {"sd-12"}
        active = gateway.alarms.active()
        assert {(a.device_id, a.kind) for a in active} == {("sd-12", "smoke"), ("wm-3", "device_offline")}
        assert samples[("citynerve_alarms_active", (("severity", "critical"),))] == len(rules_active)
        assert samples[("citynerve_alarms_active", (("severity", "major"),))] == 1
        assert samples[("citynerve_alarms_active", (("severity", "all"),))] == len(active)
        assert samples[("citynerve_uplink_configured", ())] == 0


async def test_uplink_metrics_with_a_real_broker(building: ModbusBuilding, short_dir: Path) -> None:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (.ci/run does this)")
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    try:
        host, port = building.endpoint
        extra = f'\n[upstream]\nbrokers = ["{broker.url}"]\nstatus_interval_s = 1\n'
        path = short_dir / "up.toml"
        path.write_text(gateway_toml(host, port, rules=False, extra=extra))
        cfg = load_config(path)
        async with run_gateway(cfg) as gw, StatusServer(WebConfig(enabled=True, port=0), gw) as server:
            assert server.port
            await wait_for(lambda: gw.uplink is not None and gw.uplink.snapshot().published_msgs > 0, 15)
            await asyncio.sleep(1.1)
            text = (await get(server.port, "/metrics"))[2].decode()
            strict_parse(text)
            samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples["citynerve_uplink_configured"] == 1
            assert samples["citynerve_uplink_connected"] == 1
            assert samples["citynerve_uplink_published_messages_total"] > 0
            assert samples["citynerve_uplink_reconnects_total"] >= 0
            await asyncio.sleep(1.1)
            text = (await get(server.port, "/metrics"))[2].decode()
            rate = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            assert rate["citynerve_uplink_publish_rate"] >= 0
            state = json.loads((await get(server.port, "/api/status"))[2])
            assert state["uplink"]["connected"] is True
    finally:
        broker.close()


@given(
    st.text(max_size=40),
    st.floats(allow_nan=False, allow_infinity=True) | st.integers(-(2**53), 2**53),
)
def test_any_label_value_round_trips_through_the_reference_parser(label: str, value: float) -> None:
    m = Exposition()
    m.add("citynerve_test", "gauge", 'help with "quotes" and \\ backslash', value, {"device": label})
    text = m.render()
    strict_parse(text)
    [family] = list(text_string_to_metric_families(text))
    [sample] = family.samples
    assert sample.labels == {"device": label}
    assert sample.value == float(value)


async def test_garbage_requests_never_break_the_server(gateway: Gateway) -> None:
    """Deterministic fuzzing: random bytes, mangled request lines and headers; every reply is a
    well-formed HTTP status (or the connection just closes), and the server keeps serving."""
    import random

    rng = random.Random(7)
    pieces = [b"GET ", b"HEAD ", b"POST ", b"/", b"/metrics", b"?", b"%00", b" HTTP/1.1", b" HTTP/2",
              b"\r\n", b"\n", b":", b"Host: 127.0.0.1", b"Authorization: Basic ", b"\xff\xfe", b"\x00",
              b" "]  # fmt: skip
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as server:
        assert server.port
        for i in range(150):
            if i % 3 == 0:
                raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
            else:
                raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(raw)
            if writer.can_write_eof():
                writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            if data:
                assert re.match(rb"HTTP/1\.1 [1-5][0-9][0-9] ", data), (raw, data[:80])
        assert (await get(server.port, "/healthz"))[0] == 200
