"""Outgoing calls from a node or the CLI. For now: the standard gRPC health check.

Peer channels with deadlines and retries join this module with the peer-network issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class HealthResult:
    """Outcome of one health check: the serving status name, or why there is none."""

    status: str  # SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, or UNREACHABLE
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


def check_health(
    address: str,
    service: str = "",
    timeout_s: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> HealthResult:
    """Ask ``address`` for the health of ``service`` ("" = the whole node)."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = (
        grpc.secure_channel(address, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(address, options=options)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return HealthResult("SERVICE_UNKNOWN", f"the node does not serve {service!r}")
            return HealthResult("UNREACHABLE", f"{code.name}: {exc.details()}")
    return HealthResult(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def list_services(
    address: str, timeout_s: float = 5.0, credentials: grpc.ChannelCredentials | None = None
) -> list[str]:
    """Names of the services a node serves, read through server reflection."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        # One request, then half-close, so the stream ends OK rather than cancelled.
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=timeout_s))
    return sorted(service.name for reply in replies for service in reply.list_services_response.service)
