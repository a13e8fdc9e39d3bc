"""Building aiomqtt clients from `UpstreamConfig`: TLS, credentials, will; and the reconnect pacing."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citynerve.gateway.uplink.config import BrokerUrl, TlsConfig, UpstreamConfig
from citynerve.gateway.uplink.encoding import MqttMessage


class _NamedTlsContext(ssl.SSLContext):
    """Verifies the broker's certificate against `server_name` instead of the host we dialled
    (brokers reached by IP or through a tunnel)."""

    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
        if self.server_name:
            kw["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kw)


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client TLS context: server verification on unless `verify = false`; mTLS when a cert is given.

    Raises OSError / ssl.SSLError for unreadable or bad files (callers turn them into ConfigError).
    """
    ctx = _NamedTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.server_name = tls.server_hostname
    if tls.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if tls.ca_file is not None:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def make_client(
    config: UpstreamConfig,
    broker: BrokerUrl,
    *,
    client_id: str,
    will: MqttMessage | None,
    max_inflight: int | None = None,
    clean: bool = True,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client for `broker`. The password is read here, never stored or logged."""
    v5 = config.protocol == "5"
    password = config.password()
    kw: dict[str, Any] = {}
    if v5:
        kw["clean_start"] = clean
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        kw["properties"] = props
    else:
        kw["clean_session"] = clean
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        username=config.username,
        password=password.get_secret_value() if password is not None else None,
        will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        keepalive=config.keepalive_s,
        timeout=config.connect_timeout_s,
        tls_context=tls_context(config.tls) if broker.tls else None,
        max_inflight_messages=max_inflight or config.max_inflight,
        max_queued_outgoing_messages=0,
        **kw,
    )
    # The window of in-flight publishes is deliberate; aiomqtt would warn about it past 10.
    client.pending_calls_threshold = (max_inflight or config.max_inflight) + 64
    return client


class Backoff:
    """Capped exponential backoff with jitter: delay n is min(max, initial * 2**n), minus up to
    `jitter` of it drawn at random, so a fleet that lost its broker does not come back in step."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, *, rng: random.Random | None = None):
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * (1 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


class RateLimiter:
    """Token bucket: at most `rate` messages per second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, *, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def delay(self) -> float:
        """Take one token; return how long to wait before sending (0 when a token was there)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


def mark_disconnect_seen(client: aiomqtt.Client) -> None:
    """aiomqtt sets an "unexpected disconnection" future that no one awaits when the link dies. The
    caller handles that error where it surfaces, so retrieve it (now, or whenever it completes)
    instead of letting asyncio log "Future exception was never retrieved" at garbage collection."""
    fut = getattr(client, "_disconnected", None)
    if isinstance(fut, asyncio.Future):
        fut.add_done_callback(retrieve_exception)


def retrieve_exception(fut: asyncio.Future[Any]) -> None:
    """Done callback: mark a future's exception as seen (its error is handled, or is not news,
    elsewhere), so asyncio does not log "exception was never retrieved" for it."""
    if not fut.cancelled():
        fut.exception()


LINK_ERRORS = (aiomqtt.MqttError, OSError, TimeoutError)
STABLE_SESSION_S = 5.0
"""A session this long resets the backoff and sends the next connect to the preferred (first) broker."""


def drop_leaked_cancel(before: int) -> None:
    """Python 3.11's TaskGroup leaves its parent's cancel request counted when a child fails while
    the parent waits in __aexit__ (fixed in 3.12); a later stop request must not find a stale count."""
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling() > before:
            task.uncancel()


def describe_link_error(err: BaseException) -> str:
    exc: BaseException = err
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
