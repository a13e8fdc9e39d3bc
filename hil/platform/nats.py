"""A three-node NATS cluster (MQTT + JetStream) on free loopback ports, for tests and benchmarks: the
clustered city broker, from Debian's `nats-server` package, no root service, own data dirs in a temp
folder. Each node can be killed (SIGKILL: a crashed machine) and started again on the same ports.

NATS speaks MQTT 3.1.1 (no MQTT 5, no shared subscriptions): clients use protocol "3.1.1". QoS 1
messages and sessions live in JetStream streams replicated on every node (`stream_replicas`), so a
PUBACK means a quorum of the nodes stored the message, and a persistent session (clean_session off)
follows its client to another node. See docs/brokers.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citynerve.hil.platform.broker import wait_port

NATS_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server")
CLUSTER_NAME = "citynerve"


def find_nats_server() -> str | None:
    """Path of the nats-server binary, or None."""
    for p in NATS_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("nats-server")


def distinct_free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n free TCP ports, all different: each socket stays bound until every port is chosen (one
    free_port() after another may hand out the same port twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


class NatsClusterError(RuntimeError):
    """The cluster did not come up (or a node did not come back) in time; names the node."""

    def __init__(self, node: str, what: str) -> None:
        super().__init__(f"nats node {node}: {what}")
        self.node = node


@dataclass(slots=True)
class NatsNode:
    """One server of the cluster: its ports and its process."""

    name: str
    client_port: int
    route_port: int
    mqtt_port: int
    http_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's MQTT listener as a gateway broker URL."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats.log"


class NatsCluster:
    """Three (or `size`) nats-server processes routed into one JetStream cluster with MQTT on.

    `with NatsCluster() as c:` starts every node and waits until MQTT clients are served (JetStream
    has a meta leader and the MQTT streams exist); `c.kill(i)` crashes node i, `c.start_node(i)`
    brings it back on the same ports and data dir.
    """

    def __init__(
        self,
        *,
        size: int = 3,
        workdir: Path | None = None,
        replicas: int | None = None,
        ack_wait_s: float = 30.0,
    ) -> None:
        binary = find_nats_server()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (Debian package 'nats-server')")
        self.binary = binary
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="citynerve-nats-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.replicas = replicas or size
        self.ack_wait_s = ack_wait_s
        self.size = size
        self.nodes: list[NatsNode] = []
        self._choose_ports()

    def _choose_ports(self) -> None:
        ports = distinct_free_ports(4 * self.size)
        self.nodes = [
            NatsNode(
                name=f"n{i}",
                client_port=ports[4 * i],
                route_port=ports[4 * i + 1],
                mqtt_port=ports[4 * i + 2],
                http_port=ports[4 * i + 3],
                workdir=self.workdir / f"n{i}",
            )
            for i in range(self.size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's MQTT URL, in node order (a gateway's `brokers` list)."""
        return [n.url for n in self.nodes]

    def _config(self, node: NatsNode) -> Path:
        node.workdir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f'"nats-route://127.0.0.1:{n.route_port}"' for n in self.nodes if n is not node)
        text = f"""
server_name: {node.name}
listen: 127.0.0.1:{node.client_port}
http: 127.0.0.1:{node.http_port}
jetstream {{ store_dir: "{node.workdir / "js"}" }}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{node.route_port}
  routes: [{routes}]
}}
mqtt {{
  listen: 127.0.0.1:{node.mqtt_port}
  # QoS 1 messages and sessions are stored on this many nodes before a PUBACK / SUBACK
  stream_replicas: {self.replicas}
  # a message delivered to a subscriber whose node died is delivered again after this long
  ack_wait: "{self.ack_wait_s:g}s"
}}
"""
        conf = node.workdir / "nats.conf"
        conf.write_text(text)
        return conf

    def start_node(self, i: int) -> None:
        """Start node i (again); returns once its MQTT port accepts connections."""
        node = self.nodes[i]
        if node.running:
            return
        conf = self._config(node)
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_port("127.0.0.1", node.mqtt_port, timeout_s=20)
        except TimeoutError as err:
            raise NatsClusterError(node.name, f"MQTT port not open after 20 s; see {node.log_path}") from err

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        """Start every node and wait until each one serves MQTT sessions. A node that exits at once
        (another process took one of its free ports meanwhile) makes the cluster start over on new
        ports, up to `attempts` times."""
        for attempt in range(attempts):
            try:
                for i in range(len(self.nodes)):
                    self.start_node(i)
                for node in self.nodes:
                    self.wait_ready(node, timeout_s=timeout_s)
                return
            except NatsClusterError:
                exited = any(not n.running for n in self.nodes)
                self.stop()
                if attempt + 1 == attempts or not exited:
                    raise
                for node in self.nodes:
                    shutil.rmtree(node.workdir, ignore_errors=True)
                self._choose_ports()

    def wait_ready(self, node: NatsNode, timeout_s: float = 60.0) -> None:
        """Block until JetStream on `node` is part of a cluster with a meta leader (MQTT sessions can
        only be made then). NatsClusterError after `timeout_s`."""
        end = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError):
                js = self.monitor(node, "jsz")
                meta = js.get("meta_cluster") or {}
                if meta.get("leader") and int(meta.get("cluster_size", 0)) >= len(self.nodes):
                    return
            if not node.running:
                raise NatsClusterError(node.name, f"exited; see {node.log_path}")
            if time.monotonic() > end:
                raise NatsClusterError(node.name, f"no JetStream meta leader after {timeout_s} s")
            time.sleep(0.1)

    def monitor(self, node: NatsNode, endpoint: str) -> dict[str, Any]:
        """GET the node's monitoring endpoint (e.g. "jsz", "connz?mqtt_client=ID") as JSON."""
        url = f"http://127.0.0.1:{node.http_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.loads(resp.read(1 << 20))
        if not isinstance(body, dict):
            raise ValueError(f"{url}: not a JSON object")
        return body

    def node_of_client(self, mqtt_client_id: str) -> int | None:
        """Index of the running node that holds the MQTT connection of `mqtt_client_id`, or None."""
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            with contextlib.suppress(OSError, ValueError):
                conns = self.monitor(node, f"connz?mqtt_client={mqtt_client_id}").get("connections") or []
                if any(c.get("mqtt_client") == mqtt_client_id for c in conns):
                    return i
        return None

    def kill(self, i: int) -> None:
        """SIGKILL node i: its clients' TCP connections drop, nothing is flushed."""
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
        self._reap(node)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
            self._reap(node)

    @staticmethod
    def _reap(node: NatsNode) -> None:
        if node.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=10)
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
        node.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
