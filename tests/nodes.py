"""Real in-process nodes on loopback for tests: settings (plaintext or mTLS), starting them on
this loop or a background one, and a signed caller that talks to a node as a peer would."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from node.app import Node, NodeAddresses
from node.client import HELLO
from node.config import Settings, load_settings
from node.peers.view import PeerState
from node.rpc.agora.v1 import node_pb2, peer_pb2, peer_pb2_grpc
from node.security import channel_credentials
from node.security.certs import CertificateAuthority, Issued
from node.security.envelope import now_ms, seal, sign_card
from node.security.identity import NodeIdentity

M = TypeVar("M", bound=Message)


def loopback_settings(**sections: dict[str, Any]) -> Settings:
    """Plaintext loopback settings on free ports and a fresh data dir, with section overrides merged in."""
    data_dir = tempfile.mkdtemp(prefix="agora-test-node-")
    base: dict[str, dict[str, Any]] = {
        "node": {"listen": "127.0.0.1:0", "drain_notice_s": 0.0, "data_dir": data_dir},
        "metrics": {"listen": "127.0.0.1:0"},
        "security": {"insecure": True},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_settings(overrides=base)


@contextmanager
def running_node(node: Node) -> Iterator[NodeAddresses]:
    """Start ``node`` on a private event loop in a thread; stop it gracefully on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="node-loop", daemon=True)
    thread.start()
    try:
        addresses = asyncio.run_coroutine_threadsafe(node.start(), loop).result(timeout=30)
        try:
            yield addresses
        finally:
            asyncio.run_coroutine_threadsafe(node.stop(), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class SignedCaller:
    """A caller with an identity of its own that says Hello to a node and seals requests as a
    peer would: for tests that talk to one node over a bare channel, with the product's own
    signing code (node.security.envelope)."""

    def __init__(self, name: str = "caller", address: str = "127.0.0.1:1") -> None:
        self.identity = NodeIdentity.load_or_create(Path(tempfile.mkdtemp(prefix="agora-test-caller-")))
        self.card = node_pb2.NodeCard(
            name=name, address=address, roles=[node_pb2.ROLE_STUDENT], issued_at_unix_ms=now_ms()
        )
        sign_card(self.card, self.identity)
        self.node_id = self.identity.node_id
        self.server_id = ""  # the node_id of the node this caller said Hello to

    async def hello(self, channel: aio.Channel, timeout_s: float = 10) -> peer_pb2.HelloReply:
        request = self.sealed(peer_pb2.HelloRequest(card=self.card), HELLO)
        reply: peer_pb2.HelloReply = await peer_pb2_grpc.PeerStub(channel).Hello(request, timeout=timeout_s)
        self.server_id = reply.card.node_id
        return reply

    def sealed(self, request: M, method: str, **seal_options: Any) -> M:
        """``request`` sealed for ``method`` to the node this caller said Hello to (in place)."""
        seal_options.setdefault("recipient_node_id", self.server_id)
        seal(request, method, self.identity, **seal_options)
        return request


# Peer timings for tests: heartbeats every 0.2 s, suspect after 2 misses, dead after 2 s.
FAST_PEERS: dict[str, Any] = {
    "gossip_interval_s": 0.2,
    "ping_interval_s": 0.2,
    "ping_timeout_s": 1.0,
    "suspect_after_missed": 2,
    "dead_after_s": 2.0,
    "forget_after_s": 30.0,
    "rejoin_interval_s": 2.0,
}


def mtls_settings(ca: CertificateAuthority, name: str, **sections: dict[str, Any]) -> Settings:
    """Settings for an mTLS node on loopback whose certificate ``ca`` issued into <data_dir>/certs
    (SANs: its name, localhost and 127.0.0.1), with section overrides merged in."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"agora-test-{name}-"))
    ca.issue_node(name, data_dir / "certs", dns_names=("localhost",), ips=("127.0.0.1",))
    base: dict[str, dict[str, Any]] = {
        "node": {"name": name, "listen": "127.0.0.1:0", "drain_notice_s": 0.0, "data_dir": str(data_dir)},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_settings(overrides=base)


def tls_channel(address: str, ca: CertificateAuthority, issued: Issued | None, server_name: str) -> aio.Channel:
    """An mTLS channel presenting ``issued`` (None: no client certificate) and expecting ``server_name``."""
    credentials = (
        channel_credentials(ca.cert_pem, issued.cert, issued.key)
        if issued is not None
        else grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    )
    return aio.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", server_name)])


@asynccontextmanager
async def started(*nodes: Node) -> AsyncIterator[list[str]]:
    """Start the nodes in order (seeds first); yield their addresses; stop them all on exit."""
    running: list[Node] = []
    try:
        for node in nodes:
            running.append(node)
            await node.start()
        yield [node.addresses.grpc for node in nodes if node.addresses is not None]
    finally:
        await asyncio.gather(*(node.stop() for node in running), return_exceptions=True)


class Clock:
    """A clock the test moves by hand (for PeerView, which takes its clock as an argument)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> float:
    """Wait until ``condition()`` holds; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not condition():
        if loop.time() - began > timeout_s:
            raise AssertionError(f"{what} did not become true within {timeout_s:g}s")
        await asyncio.sleep(0.02)
    return loop.time() - began


def alive_names(node: Node) -> set[str]:
    return {peer.name for peer in node.view.peers(PeerState.ALIVE)}
