"""Composition root: builds a node's parts from its settings, starts them and stops them.

Only this module (with cli.py and simulate.py) may import teacher/ and student/.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

from node import __version__
from node.config import ConfigError, Settings, split_host_port
from node.metrics import MetricsServer, NodeMetrics
from node.rpc.agora.v1 import peer_pb2, peer_pb2_grpc, teacher_pb2, teacher_pb2_grpc
from node.security.identity import IdentityError, NodeIdentity
from node.server import NodeServer, ServiceBinding, not_built_servicer

log = logging.getLogger("agora.node")


@dataclass(frozen=True)
class NodeAddresses:
    """Where a started node can be reached."""

    grpc: str
    metrics_url: str | None


class Node:
    """One Agora node: gRPC server, metrics endpoint and (with later features) model, store,
    peers and roles. Subclass and override ``services`` to plug in or fault-inject services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = NodeMetrics(model=self.model_label)
        self.server = NodeServer(settings, self.metrics, self.services())
        self._metrics_server: MetricsServer | None = None
        self.addresses: NodeAddresses | None = None
        self.identity: NodeIdentity | None = None  # loaded (or made, on first start) by start()

    @property
    def model_label(self) -> str:
        model = self.settings.model
        return f"tiny:{model.family}" if model.source == "tiny" else model.source

    def services(self) -> list[ServiceBinding]:
        """The agora.v1 services this node serves. Not yet built: answered UNIMPLEMENTED."""
        peer = not_built_servicer(peer_pb2_grpc.PeerServicer, peer_pb2.DESCRIPTOR.services_by_name["Peer"])
        teacher = not_built_servicer(
            teacher_pb2_grpc.TeacherServicer, teacher_pb2.DESCRIPTOR.services_by_name["Teacher"]
        )
        return [
            ServiceBinding("agora.v1.Peer", lambda s: peer_pb2_grpc.add_PeerServicer_to_server(peer, s)),
            ServiceBinding("agora.v1.Teacher", lambda s: teacher_pb2_grpc.add_TeacherServicer_to_server(teacher, s)),
        ]

    async def start(self) -> NodeAddresses:
        """Load the node's identity, start metrics, then gRPC; log one line saying where the node is."""
        node = self.settings.node
        try:
            self.identity = NodeIdentity.load_or_create(node.data_dir)
        except IdentityError as exc:
            raise ConfigError(str(exc)) from None
        metrics_url = None
        if self.settings.metrics.enabled:
            host, port = split_host_port(self.settings.metrics.listen)
            self._metrics_server = MetricsServer(self.metrics.registry, host, port)
            try:
                self._metrics_server.start()
            except OSError as exc:
                raise OSError(
                    f"cannot serve metrics on {self.settings.metrics.listen}: {exc.strerror or exc}"
                ) from None
            metrics_url = self._metrics_server.url
        try:
            port = await self.server.start()
        except BaseException:
            self._stop_metrics()
            raise
        host, _ = split_host_port(node.listen)
        grpc_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.addresses = NodeAddresses(grpc=grpc_address, metrics_url=metrics_url)
        log.info(
            "node %s (id %s…) listening on %s (roles: %s; %s; metrics: %s; agora %s)",
            node.name,
            self.identity.node_id[:12],
            grpc_address,
            ", ".join(node.roles),
            "plaintext, loopback only" if self.settings.security.insecure else "mTLS",
            metrics_url or "off",
            __version__,
            extra={
                "event": "node_started",
                "node": node.name,
                "node_id": self.identity.node_id,
                "address": grpc_address,
                "roles": list(node.roles),
                "metrics_url": metrics_url,
            },
        )
        return self.addresses

    async def stop(self) -> None:
        """Drain: NOT_SERVING, then let in-flight calls finish within the grace period."""
        node = self.settings.node
        started = time.monotonic()
        log.info("node %s draining (grace %.1fs)", node.name, node.shutdown_grace_s, extra={"node": node.name})
        await self.server.stop(node.shutdown_grace_s, node.drain_notice_s)
        self._stop_metrics()
        log.info(
            "node %s stopped cleanly after %.2fs",
            node.name,
            time.monotonic() - started,
            extra={"event": "node_stopped", "node": node.name},
        )

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    async def serve_until_signal(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
