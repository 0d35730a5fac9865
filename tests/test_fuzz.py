"""Hostile bytes to every method: a clear status, never UNKNOWN/INTERNAL, never a dead server."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.app import Node
from node.client import check_health
from node.rpc.agora.v1 import peer_pb2, teacher_pb2
from tests.nodes import loopback_settings, running_node

METHODS = [
    f"/{service.full_name}/{method.name}"
    for module, name in ((teacher_pb2, "Teacher"), (peer_pb2, "Peer"))
    for service in [module.DESCRIPTOR.services_by_name[name]]
    for method in service.methods
] + ["/grpc.health.v1.Health/Check", "/agora.v1.Teacher/NoSuchMethod", "/not.a.Service/X"]

# Statuses a caller may see for bytes it made up; UNKNOWN and INTERNAL would mean a leak or a bug.
CLEAR_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT,  # not a valid message of the method's type
    grpc.StatusCode.UNIMPLEMENTED,  # a method this node does not serve (yet)
    grpc.StatusCode.NOT_FOUND,  # health: a service name the node does not have
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # larger than node.max_message_bytes
    grpc.StatusCode.UNAUTHENTICATED,  # decodes, but carries no valid signed envelope
}


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    node = Node(loopback_settings(node={"max_message_bytes": 4096}))
    with running_node(node) as addresses:
        yield addresses.grpc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=6000))
def test_random_bytes_get_a_clear_status(address: str, method: str, payload: bytes) -> None:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method, None, None)  # raw bytes both ways
        try:
            call(payload, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() in CLEAR_STATUSES, (exc.code(), exc.details())
            assert "Traceback" not in (exc.details() or "")
        else:
            assert method == "/grpc.health.v1.Health/Check"  # only a valid health request can succeed


def test_still_serving_after_the_fuzzing(address: str) -> None:
    assert check_health(address).serving
