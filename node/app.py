"""Composition root: builds a node's parts from its settings, starts them and stops them.

Only this module (with cli.py and simulate.py) may import teacher/ and student/.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node import __version__
from node.client import PeerClient
from node.config import ConfigError, Settings, join_host_port, split_host_port
from node.metrics import MetricsServer, NodeMetrics
from node.peers.cards import CardIssuer
from node.peers.membership import Membership
from node.peers.service import PeerService
from node.peers.view import AllowList, PeerView, Timings
from node.rpc.agora.v1 import node_pb2, peer_pb2_grpc, teacher_pb2, teacher_pb2_grpc
from node.security import channel_credentials, tls_material
from node.security.auth import AuthInterceptor
from node.security.identity import IdentityError, NodeIdentity
from node.server import NodeServer, ServiceBinding, not_built_servicer
from node.store import STORE_FILE, Store, StoreError

if TYPE_CHECKING:  # the teacher brings torch; a node that does not teach never imports it
    from teacher.core import TeacherCore

log = logging.getLogger("agora.node")

ROLE_VALUES = {"teacher": node_pb2.ROLE_TEACHER, "student": node_pb2.ROLE_STUDENT}
CARD_LOAD_REFRESH_ROUNDS = 10  # a card whose only change is its load is re-issued at most every 10 gossip rounds


@dataclass(frozen=True)
class NodeAddresses:
    """Where a started node can be reached."""

    grpc: str
    metrics_url: str | None


class Node:
    """One Agora node: identity, store, peer view and membership, gRPC server and metrics, and
    the teacher (model, private data, ledger, guard) when it teaches. Subclass and override ``services`` to plug in or
    fault-inject services.

    Construction reads the node's key, certificates and store, so a bad data dir or missing TLS
    file is a ConfigError before anything listens.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data_dir = settings.node.data_dir
        try:
            self.identity = NodeIdentity.load_or_create(data_dir)
            self.store = Store(data_dir / STORE_FILE)
        except (IdentityError, StoreError, OSError) as exc:
            raise ConfigError(f"node.data_dir {data_dir}: {exc}") from None
        credentials = None if settings.security.insecure else channel_credentials(*tls_material(settings))
        self.metrics = NodeMetrics(model=self.model_label)
        peers = settings.peers
        self.view = PeerView(
            self.identity.node_id,
            Timings(peers.suspect_after_missed, peers.dead_after_s, peers.forget_after_s),
            AllowList(settings.security.allow),
        )
        self.issuer = CardIssuer(
            self.identity, self.card_content, load_refresh_s=CARD_LOAD_REFRESH_ROUNDS * peers.gossip_interval_s
        )
        self.client = PeerClient(settings, self.identity, self.view, self.issuer.current, credentials, self.metrics)
        self.membership = Membership(
            settings, self.view, self.client, self.issuer, self.own_load, self.metrics, self.store
        )
        self.teacher: TeacherCore | None = None
        if "teacher" in settings.node.roles and settings.teacher.tasks:
            from teacher.build import build_teacher

            self.teacher = build_teacher(settings, self.identity, self.store, self.metrics)
        self.auth = AuthInterceptor(settings, self.identity, self.view, self.metrics)
        self.server = NodeServer(settings, self.metrics, self.services(), auth=self.auth)
        self._metrics_server: MetricsServer | None = None
        self.addresses: NodeAddresses | None = None
        self.advertised = ""  # the address in this node's card, known once the server is bound

    @property
    def model_label(self) -> str:
        model = self.settings.model
        return f"tiny:{model.family}" if model.source == "tiny" else model.source

    # --- services ------------------------------------------------------------------------------

    def services(self) -> list[ServiceBinding]:
        """The agora.v1 services this node serves."""
        return [self.peer_service(), self.teacher_service()]

    def peer_service(self) -> ServiceBinding:
        service = PeerService(self.membership)
        return ServiceBinding("agora.v1.Peer", lambda server: peer_pb2_grpc.add_PeerServicer_to_server(service, server))

    def teacher_service(self) -> ServiceBinding:
        """The Teacher service; on a node that teaches nothing every method answers UNIMPLEMENTED."""
        if self.teacher is not None:
            from teacher.service import TeacherService

            teacher: Any = TeacherService(self.teacher)
        else:
            teacher = not_built_servicer(
                teacher_pb2_grpc.TeacherServicer,
                teacher_pb2.DESCRIPTOR.services_by_name["Teacher"],
                "this node teaches nothing (it needs the teacher role and teacher.tasks)",
            )
        return ServiceBinding("agora.v1.Teacher", lambda s: teacher_pb2_grpc.add_TeacherServicer_to_server(teacher, s))

    # --- the card ------------------------------------------------------------------------------

    def own_load(self) -> node_pb2.NodeLoad:
        return node_pb2.NodeLoad(in_flight_rpcs=max(self.metrics.in_flight, 0))

    def card_content(self) -> node_pb2.NodeCard:
        """What this node says of itself; the CardIssuer adds identity, time and signature."""
        settings, roles = self.settings, self.settings.node.roles
        return node_pb2.NodeCard(
            name=settings.node.name,
            address=self.advertised,
            roles=[ROLE_VALUES[role] for role in roles],
            teaches=settings.teacher.tasks if "teacher" in roles else [],
            learns=[settings.student.task] if "student" in roles else [],
            model=self.teacher.model_info if self.teacher else node_pb2.ModelInfo(id=self.model_label),
            load=self.own_load(),
            epsilon_left=self.teacher.releaser.ledger.left if self.teacher else 0.0,
            software_version=__version__,
        )

    def _advertise(self, port: int) -> str:
        node = self.settings.node
        host, advertised_port = split_host_port(node.advertise or node.listen)
        return join_host_port(host, advertised_port if node.advertise and advertised_port else port)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> NodeAddresses:
        """Start metrics, then gRPC, then membership; log one line saying where the node is."""
        node = self.settings.node
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
        grpc_address = join_host_port(host, port)
        self.advertised = self._advertise(port)
        await self.membership.start()
        self.addresses = NodeAddresses(grpc=grpc_address, metrics_url=metrics_url)
        log.info(
            "node %s (id %s…) listening on %s (roles: %s; %s; seeds: %s; metrics: %s; agora %s)",
            node.name,
            self.identity.node_id[:12],
            grpc_address,
            ", ".join(node.roles),
            "plaintext, loopback only" if self.settings.security.insecure else "mTLS",
            ", ".join(self.settings.peers.seeds) or "none",
            metrics_url or "off",
            __version__,
            extra={
                "event": "node_started",
                "node": node.name,
                "node_id": self.identity.node_id,
                "address": grpc_address,
                "advertised": self.advertised,
                "roles": list(node.roles),
                "metrics_url": metrics_url,
            },
        )
        return self.addresses

    async def stop(self) -> None:
        """Drain (NOT_SERVING, in-flight calls finish within the grace period), then stop membership."""
        node = self.settings.node
        started = time.monotonic()
        log.info("node %s draining (grace %.1fs)", node.name, node.shutdown_grace_s, extra={"node": node.name})
        await self.server.stop(node.shutdown_grace_s, node.drain_notice_s)
        await self.membership.stop()
        self._stop_metrics()
        if self.teacher is not None:
            self.teacher.host.close()
        self.store.close()
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
