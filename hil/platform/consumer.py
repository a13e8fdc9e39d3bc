"""The reference platform consumer: subscribes (MQTT 5 shared subscriptions, so several instances
share the load), stores what arrives in SQLite deduplicated by (gateway_id, seq), detects gaps and
sends end-to-end acks of the highest contiguous seq per store epoch and lane."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citynerve.gateway.api import stop_task
from citynerve.gateway.uplink import mark_disconnect_seen
from citynerve.hil.platform.commands import CommandSigner
from citynerve.hil.platform.pgstore import PgPlatformStore
from citynerve.hil.platform.store import Ingested, PlatformStore

log = logging.getLogger(__name__)

KINDS = ("telemetry", "events", "status", "inventory", "cmd/result")
STORE_STOP_S = 5.0
"""At stop, how long the store's call in progress may take before it is interrupted, and then how
long the interrupted call may take before the consumer stops without it."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message the consumer stored, for live views (the demo) and tests."""

    kind: str
    gateway_id: str
    body: dict[str, Any]
    ingested: Ingested | None


def _raise_if_cancelling() -> None:
    # Python 3.11's wait_for (inside aiomqtt) can swallow a cancellation; honour it (see the uplink).
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _StoreThread(Executor):
    """The store's calls, in order, on one daemon thread. A daemon: a call stuck in the database (a
    stalled server) never keeps the process from exiting, as ThreadPoolExecutor's threads would
    (they are joined at exit); the server rolls that call's transaction back, and nothing it was
    storing was acked."""

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the store's thread is shut down")
        if self._thread.ident is None:
            self._thread.start()  # at the first call (calls come from the event loop's thread only)
        f: Future[Any] = Future()
        self._work.put((f, functools.partial(fn, *args, **kwargs)))
        return f

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            f, call = item
            if not f.set_running_or_notify_cancel():
                continue  # cancelled while queued (its awaiter was cancelled)
            try:
                f.set_result(call())
            except BaseException as err:  # handed to the awaiter, as ThreadPoolExecutor does
                f.set_exception(err)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        self._work.put(None)  # the thread ends after the calls queued before


class PlatformConsumer:
    """Subscribe, store, ack. `async with PlatformConsumer(...) as c:` runs it in the background."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db_path: str | Path | None = None,
        topic_prefix: str = "citynerve",
        group: str | None = "platform",
        e2e_ack: bool = True,
        protocol: str = "5",
        consumer_id: str | None = None,
        on_arrival: Callable[[Arrival], None] | None = None,
        validate: Callable[[str, dict[str, Any]], None] | None = None,
        reconnect_s: float = 0.5,
        session_expiry_s: int = 3600,
        ack_signer: CommandSigner | None = None,
        store: PlatformStore | PgPlatformStore | None = None,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.host, self.port = host, port
        # Other nodes of a clustered broker, tried in turn when the current one is lost: the
        # persistent session (clean start off) follows the consumer to the node it reaches.
        self.endpoints: list[tuple[str, int]] = [(host, port), *fallbacks]
        self._endpoint = 0
        self.prefix = topic_prefix
        self.group = group
        self.e2e_ack = e2e_ack
        self.ack_signer = ack_signer  # the gateway refuses unsigned acks; None sends them unsigned
        self.protocol = protocol
        self.consumer_id = consumer_id or f"platform-{uuid.uuid4().hex[:8]}"
        # A session only outlives the connection under an id given to us: no later process takes a
        # random id's session back, and left behind in a `$share` group it was a member the broker
        # handed every other message to for the session's expiry, read by no one.
        self.persistent = consumer_id is not None
        if store is None:
            if db_path is None:
                raise ValueError("give db_path (SQLite) or a store (e.g. PgPlatformStore)")
            store = PlatformStore(db_path)
        self.store: PlatformStore | PgPlatformStore = store
        self.on_arrival = on_arrival
        self.validate = validate
        self.reconnect_s = reconnect_s
        self.session_expiry_s = session_expiry_s
        self.connected = asyncio.Event()
        self.messages = 0
        self.invalid = 0
        self._executor = _StoreThread(f"platform-db[{self.consumer_id}]")
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None

    def topics(self) -> list[str]:
        out = []
        for kind in KINDS:
            topic = f"{self.prefix}/+/{kind}"
            # Retained documents go to every instance; the rows are shared out among the group.
            if self.group and kind in ("telemetry", "events", "cmd/result"):
                topic = f"$share/{self.group}/{topic}"
            out.append(topic)
        return out

    async def __aenter__(self) -> PlatformConsumer:
        self._task = asyncio.create_task(self.run(), name=f"platform[{self.consumer_id}]")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)  # a cancel swallowed inside aiomqtt left a teardown waiting forever
        # The store's thread may still be in a call the run task was cancelled out of: an ingest
        # waiting on a lane's row lock another session holds, a stalled server. Waiting for it
        # without bound kept Ctrl-C from ending the process for as long as the wait lasted. That
        # call's rows are not acked (the ack follows the store, in the run task), so interrupting
        # it loses nothing acked: its transaction rolls back and the gateway sends them again (e2e acks).
        closed = asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        done, _ = await asyncio.wait({closed}, timeout=STORE_STOP_S)
        if not done:
            log.warning(
                "platform consumer %s: a store call still runs %.0f s after stop; interrupting it",
                self.consumer_id,
                STORE_STOP_S,
            )
            # On a thread of its own: a cancel request to a server that does not answer may block.
            threading.Thread(target=self._interrupt_store, name="platform-db-interrupt", daemon=True).start()
            done, _ = await asyncio.wait({closed}, timeout=STORE_STOP_S)
        self._executor.shutdown(wait=False)
        if done:
            closed.result()
        else:
            closed.add_done_callback(lambda f: f.cancelled() or f.exception())
            log.error(
                "platform consumer %s: the store call did not end %.0f s after its interrupt; stopping "
                "without it (the server rolls its transaction back when the connection goes)",
                self.consumer_id,
                STORE_STOP_S,
            )

    def _interrupt_store(self) -> None:
        try:
            self.store.interrupt()
        except Exception as err:  # a server that cannot be reached: the stop goes on without it
            log.warning("platform consumer %s: interrupting the store failed: %.300r", self.consumer_id, err)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self.connected.wait()

    async def run(self) -> None:
        """Consume until cancelled, reconnecting when the broker goes away."""
        while True:
            try:
                async with self._client_for_session() as client:
                    _raise_if_cancelling()
                    mark_disconnect_seen(client)
                    self._client = client
                    for topic in self.topics():
                        await client.subscribe(topic, qos=1)
                    _raise_if_cancelling()
                    self.connected.set()
                    async for message in client.messages:
                        await self._handle(client, str(message.topic), message.payload)
            except aiomqtt.MqttError as err:
                log.info("platform consumer %s: %s; reconnecting", self.consumer_id, err)
                self._endpoint = (self._endpoint + 1) % len(self.endpoints)
                self.host, self.port = self.endpoints[self._endpoint]
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(self.reconnect_s)

    def _client_for_session(self) -> aiomqtt.Client:
        # A persistent session (with a `consumer_id` given): while this instance is away (but the
        # broker lives) the broker keeps the messages that arrive meanwhile. Not those it had
        # delivered: paho PUBACKs a message when it is queued here, before _handle stores it
        # (aiomqtt 2.5 has no manual ack), so a crash loses the queue; end-to-end acks make the
        # gateway send those rows again. A random id's session ends with its connection.
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
            return aiomqtt.Client(
                self.host,
                self.port,
                identifier=self.consumer_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                keepalive=10,
                clean_start=False,
                properties=props,
            )
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.consumer_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=10,
            clean_session=not self.persistent,
        )

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        parts = topic.split("/")
        prefix_len = len(self.prefix.split("/"))
        if len(parts) < prefix_len + 2:
            return
        gateway_id = parts[prefix_len]
        kind = "/".join(parts[prefix_len + 1 :])
        # One bad message never stops the others: whatever parsing, storing (the store rolls its
        # transaction back) or the arrival callback raises, the message is counted and logged.
        try:
            body = json.loads(payload if isinstance(payload, bytes | str) else b"")
            if not isinstance(body, dict):
                raise ValueError("not an object")
            if body.get("gateway_id") != gateway_id:
                # Stored by the body's id, acked on the topic's: another gateway's chain must not move.
                raise ValueError(f"gateway_id {body.get('gateway_id')!r:.70} is not the topic's")
            if self.validate is not None:
                self.validate(kind, body)
            self.messages += 1
            await self._store_and_ack(client, gateway_id, kind, body)
        except aiomqtt.MqttError:
            raise  # the connection, not the message: run() reconnects
        except Exception as err:
            self.invalid += 1
            log.warning("platform: message on %.200s refused: %.300r", topic, err)

    async def _store_and_ack(
        self, client: aiomqtt.Client, gateway_id: str, kind: str, body: dict[str, Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        ingested: Ingested | None = None
        if kind in ("telemetry", "events"):
            ingested = await loop.run_in_executor(self._executor, self.store.ingest, body)
            # Ack every time, not only on progress: a resend after the gateway lost our last ack
            # (broker restart) must be answered, or the gateway would wait for it forever.
            if self.e2e_ack and ingested.contiguous > 0:
                ack = {
                    "schema": "citynerve.ack/1",
                    "gateway_id": gateway_id,
                    "lane": ingested.lane,
                    "epoch": ingested.epoch,
                    "seq": ingested.contiguous,
                    "ts_ms": int(time.time() * 1000),
                    "consumer": self.consumer_id,
                }
                if self.ack_signer is not None:
                    ack = self.ack_signer.sign_ack(ack)
                await client.publish(f"{self.prefix}/{gateway_id}/ack", json.dumps(ack), qos=1)
        elif kind in ("status", "inventory"):
            await loop.run_in_executor(self._executor, self.store.put_document, kind, body)
            acked = body.get("acked") if kind == "status" else None
            epoch = body.get("epoch")
            if isinstance(acked, dict) and isinstance(epoch, str):
                # Where the chain starts: rows up to `acked` are settled at the gateway.
                for lane, seq in acked.items():
                    if lane in ("event", "telemetry") and isinstance(seq, int) and seq > 0:
                        await loop.run_in_executor(
                            self._executor, self.store.settle, gateway_id, epoch, lane, seq
                        )
        elif kind == "cmd/result":
            await loop.run_in_executor(self._executor, self.store.put_result, body)
        if self.on_arrival is not None:
            self.on_arrival(Arrival(kind, gateway_id, body, ingested))

    async def query(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read on the store's thread (so tests and views never race the writer)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self.store)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish through the consumer's connection (commands from the platform side)."""
        if self._client is None:
            raise aiomqtt.MqttError("platform consumer is not connected")
        await self._client.publish(topic, payload, qos=qos)
