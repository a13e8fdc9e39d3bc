"""`citynerve diag uplink`: step-by-step checks of the way to each broker, each with a verdict.

DNS -> TCP -> TLS -> MQTT connect -> publish/subscribe round trip. A failed step names why and the
later steps are skipped (they cannot tell anything new). The probe uses its own client id so it never
pushes the running gateway's session off the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from citynerve.gateway.api import ConfigError
from citynerve.gateway.uplink import certinfo
from citynerve.gateway.uplink._connection import make_client, tls_context
from citynerve.gateway.uplink.config import BrokerUrl, UpstreamConfig


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


STEPS = ("dns", "tcp", "tls", "mqtt_connect", "round_trip")


@dataclass(frozen=True, slots=True)
class Check:
    step: str
    verdict: Verdict
    detail: str
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class BrokerReport:
    broker: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.verdict is not Verdict.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"broker": self.broker, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


class _StepFailed(Exception):
    pass


async def _timed(step: str, fn: Callable[[], Awaitable[str]], timeout_s: float) -> Check:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            detail = await fn()
        verdict = Verdict.PASS
    except TimeoutError:
        verdict, detail = Verdict.FAIL, f"no answer within {timeout_s:g} s"
    except _StepFailed as err:
        verdict, detail = Verdict.FAIL, str(err)
    return Check(step, verdict, detail, (time.perf_counter() - t0) * 1000)


async def probe_broker(
    config: UpstreamConfig, broker: BrokerUrl, *, gateway_id: str, timeout_s: float = 5.0
) -> BrokerReport:
    """Run every step against one broker."""
    loop = asyncio.get_running_loop()
    checks: list[Check] = []

    async def dns() -> str:
        try:
            infos = await loop.getaddrinfo(broker.host, broker.port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            raise _StepFailed(f"cannot resolve {broker.host}: {err.strerror}") from err
        addrs = sorted({str(i[4][0]) for i in infos})
        return ", ".join(addrs)

    async def tcp() -> str:
        try:
            _, writer = await asyncio.open_connection(broker.host, broker.port)
        except OSError as err:
            if err.errno == errno.ECONNREFUSED:
                raise _StepFailed(
                    f"{broker.host}:{broker.port} refused the connection (no broker there?)"
                ) from err
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise _StepFailed(f"cannot connect to {broker.host}:{broker.port}: {reason}") from err
        writer.close()
        return f"connected to {broker.host}:{broker.port}"

    async def tls() -> str:
        try:
            ctx = tls_context(config.tls)
        except (OSError, ssl.SSLError) as err:
            raise _StepFailed(f"cannot load TLS files: {err}") from err
        try:
            _, writer = await asyncio.open_connection(
                broker.host, broker.port, ssl=ctx, server_hostname=config.tls.server_hostname or broker.host
            )
        except ssl.SSLCertVerificationError as err:
            name = config.tls.server_hostname or broker.host
            presented = await certinfo.presented_certificate(broker.host, broker.port, name)
            raise _StepFailed(
                f"server certificate not trusted: {err.verify_message}; presented: {presented or 'unknown'}; "
                f"configured CA: {certinfo.describe_ca_file(config.tls.ca_file)}"
            ) from err
        except (OSError, ssl.SSLError) as err:
            raise _StepFailed(f"TLS handshake failed: {err}") from err
        sslobj = writer.get_extra_info("ssl_object")
        version = sslobj.version() if sslobj else "?"
        cert = writer.get_extra_info("peercert") or {}
        writer.close()
        subject = dict(x[0] for x in cert.get("subject", ())) if cert else {}
        verify = "verified" if config.tls.verify else "NOT verified (verify = false)"
        return f"{version}, server certificate {subject.get('commonName', '?')} {verify}"

    async def connect_and_round_trip() -> tuple[Check, Check]:
        client_id = f"{config.effective_client_id(gateway_id)}-diag-{secrets.token_hex(3)}"
        t0 = time.perf_counter()
        try:
            client = make_client(config, broker, client_id=client_id, will=None)
        except ConfigError as err:
            return (
                Check("mqtt_connect", Verdict.FAIL, f"credentials: {err}", 0.0),
                Check("round_trip", Verdict.SKIP, "skipped: not connected", 0.0),
            )
        try:
            async with asyncio.timeout(timeout_s):
                await client.__aenter__()
        except MqttConnectError as err:
            return (
                Check(
                    "mqtt_connect",
                    Verdict.FAIL,
                    f"broker refused the connection: {err}",
                    (time.perf_counter() - t0) * 1000,
                ),
                Check("round_trip", Verdict.SKIP, "skipped: not connected", 0.0),
            )
        except (aiomqtt.MqttError, OSError, TimeoutError) as err:
            return (
                Check(
                    "mqtt_connect",
                    Verdict.FAIL,
                    # asyncio's TimeoutError has no text (and `err or ...` never falls back)
                    f"no MQTT session: {str(err) or f'no CONNACK within {timeout_s:g} s'}",
                    (time.perf_counter() - t0) * 1000,
                ),
                Check("round_trip", Verdict.SKIP, "skipped: not connected", 0.0),
            )
        connected = Check(
            "mqtt_connect",
            Verdict.PASS,
            f"MQTT {config.protocol} as {client_id}",
            (time.perf_counter() - t0) * 1000,
        )
        topic = f"{config.topic_prefix}/{gateway_id}/diag/{secrets.token_hex(4)}"
        t1 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await client.subscribe(topic, qos=1)
                token = secrets.token_hex(8).encode()
                await client.publish(topic, token, qos=1)
                async for m in client.messages:
                    if m.payload == token:
                        break
            rt = Check(
                "round_trip",
                Verdict.PASS,
                f"published and received on {topic}",
                (time.perf_counter() - t1) * 1000,
            )
        except TimeoutError:
            rt = Check(
                "round_trip",
                Verdict.FAIL,
                f"message not back within {timeout_s:g} s (ACL denies {config.topic_prefix}/{gateway_id}/#?)",
                (time.perf_counter() - t1) * 1000,
            )
        except aiomqtt.MqttError as err:
            rt = Check(
                "round_trip",
                Verdict.FAIL,
                f"publish/subscribe failed: {err}",
                (time.perf_counter() - t1) * 1000,
            )
        finally:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        return connected, rt

    for step, fn in (("dns", dns), ("tcp", tcp)):
        check = await _timed(step, fn, timeout_s)
        checks.append(check)
        if check.verdict is Verdict.FAIL:
            break
    else:
        if broker.tls:
            checks.append(await _timed("tls", tls, timeout_s))
        else:
            checks.append(Check("tls", Verdict.SKIP, "plain mqtt:// (no TLS configured)", 0.0))
        if checks[-1].verdict is not Verdict.FAIL:
            checks.extend(await connect_and_round_trip())
    done = {c.step for c in checks}
    failed = next((c.step for c in checks if c.verdict is Verdict.FAIL), None)
    for step in STEPS:
        if step not in done:
            checks.append(Check(step, Verdict.SKIP, f"skipped: {failed} failed", 0.0))
    return BrokerReport(str(broker), tuple(checks))


async def probe_uplink(
    config: UpstreamConfig, *, gateway_id: str, timeout_s: float = 5.0
) -> list[BrokerReport]:
    """Every configured broker, in failover order."""
    return [
        await probe_broker(config, b, gateway_id=gateway_id, timeout_s=timeout_s)
        for b in config.broker_urls()
    ]
