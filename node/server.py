"""The node's grpc.aio server: services, interceptors, health, reflection and draining."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node import __version__
from node.config import Settings
from node.interceptors import ErrorGuardInterceptor, MetricsInterceptor, UnknownMethodInterceptor
from node.metrics import NodeMetrics
from node.security import server_credentials

log = logging.getLogger("agora.server")

# grpc_health's stubs do not describe its asyncio servicer.
AsyncHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]


def method_paths(services: list[str]) -> set[str]:
    """Full method paths ("/pkg.Service/Method") of services whose descriptors are loaded."""
    pool = descriptor_pool.Default()
    return {f"/{name}/{method.name}" for name in services for method in pool.FindServiceByName(name).methods}


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to serve: its full name and how to add its servicer to a server."""

    name: str
    add_to_server: Callable[[aio.Server], None]


def not_built_servicer(base: type[Any], service: ServiceDescriptor, why: str | None = None) -> Any:
    """A servicer for ``service`` whose every method answers UNIMPLEMENTED with a sentence.

    Used for the parts of the wire contract this node does not serve (not built yet, or not
    configured: `why`), so that a caller learns that plainly instead of a generic "Method not found".
    """

    def make(method_name: str) -> Callable[..., Any]:
        reason = why or f"it is not built yet in Agora {__version__}"
        message = f"{service.full_name}/{method_name}: {reason}; this node cannot answer it"

        async def unimplemented(self: Any, request: Any, context: aio.ServicerContext[Any, Any]) -> NoReturn:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return unimplemented

    methods = {m.name: make(m.name) for m in service.methods}
    return type(f"NotBuilt{service.name}Servicer", (base,), methods)()


class NodeServer:
    """grpc.aio server with health (SERVING once started, NOT_SERVING while draining),
    reflection, RPC metrics, the error guard and (given one) the auth interceptor, over mTLS or
    loopback plaintext."""

    def __init__(
        self,
        settings: Settings,
        metrics: NodeMetrics,
        services: list[ServiceBinding],
        auth: aio.ServerInterceptor[Any, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._services = services
        self._auth = auth
        self._known = sorted({*(s.name for s in services), health.SERVICE_NAME, reflection.SERVICE_NAME})
        self._server: aio.Server | None = None
        self.health: Any = None
        self.port: int | None = None

    def _build(self) -> aio.Server:
        # grpc.aio objects belong to the running event loop, so they are made in start().
        limit = self._settings.node.max_message_bytes
        # Outermost first: metrics see every final status; the guard turns bad bytes and crashes
        # into clear statuses; auth runs on decoded requests only, before any agora.v1 handler.
        interceptors: list[aio.ServerInterceptor[Any, Any]] = [
            MetricsInterceptor(self._metrics, method_paths(self._known)),
            ErrorGuardInterceptor(max_reply_bytes=limit),
        ]
        if self._auth is not None:
            interceptors.append(self._auth)
        interceptors.append(UnknownMethodInterceptor(self._known))
        server = aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second node on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=self._settings.node.max_concurrent_rpcs,
        )
        for service in self._services:
            service.add_to_server(server)
        self.health = AsyncHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(self._known, server)
        return server

    async def start(self) -> int:
        """Bind, start serving and report SERVING; returns the bound port."""
        listen = self._settings.node.listen
        credentials = server_credentials(self._settings)
        server = self._server = self._build()
        try:
            if credentials is None:
                self.port = server.add_insecure_port(listen)
            else:
                self.port = server.add_secure_port(listen, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {listen}: {exc}") from None
        if not self.port:  # older grpc returns 0 instead of raising
            raise OSError(f"cannot listen on {listen}: address in use or not available")
        await server.start()
        assert self.health is not None
        for name in ["", *(s.name for s in self._services)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_s: float, drain_notice_s: float = 0.0) -> None:
        """Report NOT_SERVING, keep accepting for ``drain_notice_s`` (so load balancers see
        it), then refuse new calls and give in-flight ones up to ``grace_s`` to finish."""
        if self._server is None or self.health is None:
            return
        await self.health.enter_graceful_shutdown()
        if drain_notice_s > 0:
            await asyncio.sleep(drain_notice_s)
        await self._server.stop(grace_s)
