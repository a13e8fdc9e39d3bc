"""A Sparkplug host application for tests against a real `citynerve run`: it subscribes to
`spBv1.0/#` on a real Mosquitto, resolves aliases through the births as a host does, and keeps what
a SCADA shows as a tag's *current* value (births, and data that is not `is_historical`). It also
publishes the primary host's STATE and NCMD rebirth requests, and checks each lane's `prev_seq`
chain from the metric properties."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from citynerve.gateway.api import stop_task
from citynerve.gateway.uplink.sparkplug import REBIRTH_METRIC, DataType, Payload
from citynerve.hil.platform import MosquittoBroker


def value_of(m: Any) -> Any:
    if m.HasField("is_null") and m.is_null:
        return None
    which = m.WhichOneof("value")
    return getattr(m, which) if which else None


def props_of(m: Any) -> dict[str, Any]:
    if not m.HasField("properties"):
        return {}
    return {k: value_of(v) for k, v in zip(m.properties.keys, m.properties.values, strict=True)}


@dataclass(frozen=True, slots=True)
class DataMetric:
    """One metric of an NDATA/DDATA, its name resolved through the births."""

    verb: str
    device: str | None
    name: str
    value: Any
    historical: bool
    props: dict[str, Any]


@dataclass
class HostView:
    births: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    data: list[DataMetric] = field(default_factory=list)
    current: dict[tuple[str | None, str], Any] = field(default_factory=dict)
    verbs: list[str] = field(default_factory=list)


class SparkplugHost:
    """An async context manager; `view` is updated as messages arrive."""

    def __init__(self, broker: MosquittoBroker, *, group_id: str, node_id: str, host_id: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.node_id = node_id
        self.host_id = host_id
        self.view = HostView()
        self._aliases: dict[str | None, dict[int, str]] = {}
        self._client = aiomqtt.Client(broker.host, broker.port, identifier=f"test-host-{time.time_ns()}")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SparkplugHost:
        await self._client.__aenter__()
        await self._client.subscribe(f"spBv1.0/{self.group_id}/#", qos=1)
        self._task = asyncio.create_task(self._read(), name="test-sparkplug-host.read")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await stop_task(self._task)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def state(self, online: bool) -> None:
        body = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
        await self._client.publish(f"spBv1.0/STATE/{self.host_id}", body, qos=1, retain=True)

    async def rebirth(self) -> None:
        cmd = Payload(timestamp=int(time.time() * 1000))
        cmd.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
        topic = f"spBv1.0/{self.group_id}/NCMD/{self.node_id}"
        await self._client.publish(topic, cmd.SerializeToString(), qos=1)

    async def _read(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            self._take(str(message.topic), Payload.FromString(message.payload))

    def _take(self, topic: str, payload: Any) -> None:
        parts = topic.split("/")
        verb = parts[2]
        device = parts[4] if len(parts) > 4 else None
        self.view.verbs.append(verb)
        if verb in ("NBIRTH", "DBIRTH"):
            named = {m.name: value_of(m) for m in payload.metrics}
            self._aliases[device] = {m.alias: m.name for m in payload.metrics if m.HasField("alias")}
            self.view.births.append((verb, device, named))
            for name, value in named.items():
                self.view.current[(device, name)] = value
        elif verb in ("NDATA", "DDATA"):
            aliases = self._aliases.get(device, {})
            for m in payload.metrics:
                name = m.name or aliases.get(m.alias, f"?{m.alias}")
                dm = DataMetric(verb, device, name, value_of(m), bool(m.is_historical), props_of(m))
                self.view.data.append(dm)
                if not dm.historical:
                    self.view.current[(device, name)] = dm.value

    def last_birth(self, device: str | None) -> dict[str, Any] | None:
        births = [named for _, d, named in self.view.births if d == device]
        return births[-1] if births else None
