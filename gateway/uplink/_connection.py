"""Building aiomqtt clients from `UpstreamConfig`: TLS, credentials, will; the broker's refusals and
packet size limit (`UplinkClient`); and the reconnect pacing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import time
from collections.abc import MutableMapping
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.types import PayloadType
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citynerve.gateway.uplink.config import BrokerUrl, TlsConfig, UpstreamConfig
from citynerve.gateway.uplink.encoding import MqttMessage
from citynerve.gateway.uplink.errors import PublishRefusedError

log = logging.getLogger(__name__)

MIN_PACKET_LIMIT = 4096
"""A broker's Maximum Packet Size below this is not acted on (logged; sent as if none were given):
rows too large for it are dropped, and the `outbox_dropped` notice of a drop must itself fit."""


class DestinationLog(logging.LoggerAdapter[logging.Logger]):
    """The log of one destination's uplink: every line starts `uplink[<id>]: ` (two destinations
    on one broker log apart) and carries `destination` on its record (a field of JSON log lines)."""

    def __init__(self, logger: logging.Logger, destination: str) -> None:
        super().__init__(logger, {"destination": destination})
        self.destination = destination

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "destination": self.destination}
        return f"uplink[{self.destination}]: {msg}", kwargs


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


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def publish_packet_bytes(topic: str, payload_bytes: int) -> int:
    """The size of an MQTT 5 QoS 1 PUBLISH packet without properties, as a broker's Maximum Packet
    Size counts it: fixed header, topic, packet id, property length, payload."""
    rest = 2 + len(topic.encode()) + 2 + 1 + payload_bytes
    return 1 + _varint_len(rest) + rest


class UplinkClient(aiomqtt.Client):
    """An aiomqtt client that never takes a refused publish for a delivered one, and keeps the
    broker's packet size limit.

    - An MQTT 5 PUBACK with a failure reason code (0x87 not authorized, 0x97 quota exceeded, 0x95
      packet too large): aiomqtt 2.5 resolves the publish as if the broker had taken it, and the
      rows would leave the outbox unsent. Here the refusal is kept (`refused`), the connection is
      ended (a DISCONNECT that keeps the will: the platform sees the gateway offline) and every
      publish of this client, waiting or later, raises `PublishRefusedError`, so the session ends
      and its rows go again in the next one. (MQTT 3.1.1 has no such code: a broker acks, or
      disconnects, or both: Mosquitto 2.0 acks a publish its ACL denies, then disconnects; see
      `heard`.)
    - `max_packet_size`: the CONNACK's Maximum Packet Size (MQTT 5), None when the broker gave none
      (or one below MIN_PACKET_LIMIT); `room(topic)` is the payload a publish on `topic` may carry.
    """

    max_packet_size: int | None = None
    refused: PublishRefusedError | None = None
    heard = 0
    """Packets read from the broker on this connection (PUBACKs, PINGRESPs, ...), counted before
    each is handled: one read after a publish's PUBACK shows the broker kept the connection after
    that publish (the MQTT 3.1.1 settling of `Uplink`)."""
    destination = "default"
    """The destination (`[[upstream]] id`) this client is for: named in its log lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        handle = self._client._packet_handle  # paho's one entry for every packet read
        self._heard = asyncio.Event()

        def counted() -> mqtt.MQTTErrorCode:
            self.heard += 1
            self._heard.set()
            return handle()

        self._client._packet_handle = counted  # type: ignore[method-assign]

    async def heard_after(self, count: int) -> None:
        """Until the broker sent a packet after the first `count` of this connection (`heard` >
        `count`); a connection that ends first ends the session, which cancels the wait."""
        while self.heard <= count:
            self._heard.clear()
            await self._heard.wait()

    def room(self, topic: str) -> int | None:
        """The largest payload a publish on `topic` may carry (None: no known limit)."""
        limit = self.max_packet_size
        if limit is None:
            return None
        return limit - publish_packet_bytes(topic, 0) - 2  # - 2: the varint may grow with the payload

    def fits(self, msg: MqttMessage) -> bool:
        """Whether `msg` is within the broker's Maximum Packet Size (True when it gave none)."""
        room = self.room(msg.topic)
        return room is None or len(msg.payload) <= room

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        # aiomqtt drops the CONNACK's properties; the limit is the only one needed here.
        limit = getattr(properties, "MaximumPacketSize", None)
        self.max_packet_size = None
        if isinstance(limit, int):
            if limit >= MIN_PACKET_LIMIT:
                self.max_packet_size = limit
            else:
                DestinationLog(log, self.destination).warning(
                    "the broker's maximum packet size %d is below %d bytes: not acted on "
                    "(a message over it ends the session, as with no limit given)",
                    limit,
                    MIN_PACKET_LIMIT,
                )
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if reason_code.is_failure and self.refused is None:
            sent = client._out_messages.get(mid)  # paho pops it after this callback
            self.refused = PublishRefusedError(
                reason_code.getName(), reason_code.value, sent.topic if sent is not None else None, mid
            )
            if not self._disconnected.done():
                self._disconnected.set_exception(self.refused)
            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        # Wakes the waiting publish; with a refusal it raises (`publish`).
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish(  # type: ignore[override]
        self,
        /,
        topic: str,
        payload: PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (aiomqtt's signature)
        **kwargs: Any,
    ) -> None:
        """`aiomqtt.Client.publish`, but PublishRefusedError once the broker refused a publish of
        this connection (this one or another: a publish acked just before the refusal may raise
        too, its rows are then sent again: a duplicate, never a loss)."""
        self._raise_refused()
        await super().publish(topic, payload, qos, retain, properties, *args, timeout=timeout, **kwargs)
        self._raise_refused()

    def _raise_refused(self) -> None:
        r = self.refused
        if r is not None:  # a new instance per raise: several tasks raise it at once
            raise PublishRefusedError(r.reason, r.code, r.topic, r.mid)


def make_client(
    config: UpstreamConfig,
    broker: BrokerUrl,
    *,
    client_id: str,
    will: MqttMessage | None,
    max_inflight: int | None = None,
    clean: bool = True,
) -> UplinkClient:
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
    client = UplinkClient(
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
    client.destination = config.id
    # The window of in-flight publishes is deliberate; aiomqtt would warn about it past 10.
    client.pending_calls_threshold = (max_inflight or config.max_inflight) + 64
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to set
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(quiet_closed_socket)
    return client


def quiet_closed_socket(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler while uplinks run: every error as asyncio reports it,
    except one aiomqtt race. Paho asks aiomqtt to watch its socket for writing; aiomqtt schedules
    `loop.add_writer(fd)`, and when paho closes the socket before that runs (a keepalive timeout
    after the gateway was frozen or starved), the call fails with EBADF and asyncio logged a
    traceback at ERROR for a connection that is already ended and being redialled."""
    exc = context.get("exception")
    callback = getattr(context.get("handle"), "_callback", None)
    watch = (loop.add_writer, loop.add_reader)
    if isinstance(exc, OSError) and exc.errno == errno.EBADF and callback in watch:
        log.debug("uplink: a socket closed before the event loop watched it (the session ended)")
        return
    loop.default_exception_handler(context)


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
    # A refusal ends the session through whichever task notices first ("Disconnected during
    # message iteration" from the receiver): name the refusal.
    if isinstance(exc.__cause__, PublishRefusedError):
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
