"""The peer client against real nodes whose Peer service misbehaves on purpose (subclassed):
deadlines on every call, retries for UNAVAILABLE only with back-off, no calls to dead peers,
and a Hello when the callee has forgotten us. The caller is the real PeerClient over a real
PeerView, driven directly so that no background loop can race the test."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from node.app import Node
from node.client import PeerCallError, PeerClient
from node.config import Settings
from node.peers.cards import CardIssuer
from node.peers.service import PeerService
from node.peers.view import PeerState, PeerView, Timings
from node.rpc.agora.v1 import node_pb2, peer_pb2
from node.security.envelope import sign_card
from node.security.identity import NodeIdentity
from node.server import ServiceBinding
from tests.nodes import Clock, loopback_settings

PING = "/agora.v1.Peer/Ping"
Context = aio.ServicerContext[Any, Any]


class FaultyPeerService(PeerService):
    """Ping answers with the scripted statuses first ("sleep" = outlive any deadline), then OK."""

    script: list[str]
    calls = 0

    async def Ping(self, request: peer_pb2.PingRequest, context: Context) -> peer_pb2.PingReply:
        self.calls += 1
        step = self.script.pop(0) if self.script else "OK"
        if step == "sleep":
            await asyncio.sleep(30)
        elif step != "OK":
            await context.abort(grpc.StatusCode[step], f"scripted {step}")
        return await super().Ping(request, context)


class FaultyNode(Node):
    """A node serving FaultyPeerService. No seeds, so it never calls anyone on its own."""

    def peer_service(self) -> ServiceBinding:
        from node.rpc.agora.v1 import peer_pb2_grpc

        self.faulty = FaultyPeerService(self.membership)
        self.faulty.script = []
        return ServiceBinding("agora.v1.Peer", lambda s: peer_pb2_grpc.add_PeerServicer_to_server(self.faulty, s))


class Caller:
    """A caller's real parts: identity, card, view (on a test clock) and PeerClient."""

    def __init__(self, tmp_path: Path, settings: Settings) -> None:
        self.identity = NodeIdentity.load_or_create(tmp_path / "caller")
        self.clock = Clock()
        peers = settings.peers
        self.view = PeerView(
            self.identity.node_id,
            Timings(peers.suspect_after_missed, peers.dead_after_s, peers.forget_after_s),
            clock=self.clock,
        )
        content = node_pb2.NodeCard(name="caller", address="127.0.0.1:1", roles=[node_pb2.ROLE_STUDENT])
        self.issuer = CardIssuer(self.identity, lambda: content, load_refresh_s=60)
        self.client = PeerClient(settings, self.identity, self.view, self.issuer.current, None, rng=random.Random(0))


@asynccontextmanager
async def faulty_node_and_caller(tmp_path: Path, **peers: Any) -> AsyncIterator[tuple[FaultyNode, Caller]]:
    settings = loopback_settings(peers={"retry_backoff_s": 0.05, **peers})
    node = FaultyNode(settings)
    await node.start()
    caller = Caller(tmp_path, settings)
    try:
        assert node.addresses is not None
        hello = await caller.client.hello(node.addresses.grpc)
        caller.view.learn(hello.card, direct=True)
        yield node, caller
    finally:
        await caller.client.close()
        await node.stop()


def served(node: Node, code: str) -> float:
    labels = {"service": "agora.v1.Peer", "method": "Ping", "code": code}
    return node.metrics.registry.get_sample_value("agora_rpc_requests_total", labels) or 0.0


def test_unavailable_is_retried_with_backoff_until_it_succeeds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with faulty_node_and_caller(tmp_path) as (node, caller):
            node.faulty.script = ["UNAVAILABLE", "UNAVAILABLE"]
            loop = asyncio.get_running_loop()
            began = loop.time()
            reply = await caller.client.call(node.identity.node_id, PING, peer_pb2.PingRequest(sequence=3),
                                             peer_pb2.PingReply, attempts=4)  # fmt: skip
            assert reply.sequence == 3 and node.faulty.calls == 3
            assert loop.time() - began < 2  # two jittered back-offs of at most 0.05 s and 0.1 s
            assert served(node, "UNAVAILABLE") == 2 and served(node, "OK") == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("status", ["INVALID_ARGUMENT", "PERMISSION_DENIED", "INTERNAL"])
def test_other_errors_are_not_retried(tmp_path: Path, status: str) -> None:
    async def scenario() -> None:
        async with faulty_node_and_caller(tmp_path) as (node, caller):
            node.faulty.script = [status, status]
            with pytest.raises(PeerCallError) as failed:
                await caller.client.call(node.identity.node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            assert failed.value.code == grpc.StatusCode[status] and failed.value.details == f"scripted {status}"
            assert node.faulty.calls == 1

    asyncio.run(scenario())


def test_retries_stop_after_max_attempts(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with faulty_node_and_caller(tmp_path, max_attempts=3) as (node, caller):
            node.faulty.script = ["UNAVAILABLE"] * 10
            with pytest.raises(PeerCallError, match="UNAVAILABLE: scripted UNAVAILABLE"):
                await caller.client.call(node.identity.node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            assert node.faulty.calls == 3

    asyncio.run(scenario())


def test_every_call_has_a_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with faulty_node_and_caller(tmp_path, call_timeout_s=0.5) as (node, caller):
            node.faulty.script = ["sleep"]
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(PeerCallError) as failed:
                await caller.client.call(node.identity.node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            assert failed.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert loop.time() - began < 5 and node.faulty.calls == 1  # cut at the deadline, not retried

    asyncio.run(scenario())


def test_dead_peers_are_not_called(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with faulty_node_and_caller(tmp_path) as (node, caller):
            node_id = node.identity.node_id
            await caller.client.call(node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            caller.clock.now += caller.view.timings.dead_after_s + 1
            caller.view.tick()
            assert caller.view.get(node_id) is not None
            assert caller.view.get(node_id).state is PeerState.DEAD  # type: ignore[union-attr]
            with pytest.raises(PeerCallError) as refused:
                await caller.client.call(node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "dead in this node's view" in str(
                refused.value
            )
            assert node.faulty.calls == 1  # only the first call reached the node

    asyncio.run(scenario())


def test_a_peer_that_forgot_us_gets_a_hello_and_the_call_goes_through(tmp_path: Path) -> None:
    """The callee learned of the caller second-hand only (here: never): it answers
    UNAUTHENTICATED/unknown_sender; the client says Hello and retries once."""

    async def scenario() -> None:
        settings = loopback_settings()
        node = FaultyNode(settings)
        await node.start()
        caller = Caller(tmp_path, settings)
        try:
            caller.view.learn(node.membership.own_card())  # as if relayed by gossip: the node never heard of us
            assert node.view.get(caller.identity.node_id) is None
            reply = await caller.client.call(node.identity.node_id, PING, peer_pb2.PingRequest(sequence=8),
                                             peer_pb2.PingReply)  # fmt: skip
            assert reply.sequence == 8
            assert node.view.get(caller.identity.node_id) is not None  # the Hello introduced us
            unknown = node.metrics.registry.get_sample_value(
                "agora_auth_rejections_total", {"reason": "unknown_sender"}
            )
            assert unknown == 1
        finally:
            await caller.client.close()
            await node.stop()

    asyncio.run(scenario())


def test_a_call_meant_for_another_node_is_refused_there(tmp_path: Path) -> None:
    """The caller holds a card of node X whose address now belongs to node Y (X moved; Y took its
    old port). Everything the caller sends is addressed to X, so Y refuses it (wrong_recipient),
    and nothing Y says is taken for X's."""

    async def scenario() -> None:
        settings = loopback_settings()
        real, impostor = FaultyNode(settings), FaultyNode(loopback_settings())
        await real.start()
        await impostor.start()
        caller = Caller(tmp_path, settings)
        try:
            assert impostor.addresses is not None
            card = node_pb2.NodeCard()
            card.CopyFrom(real.membership.own_card())
            card.address = impostor.addresses.grpc
            sign_card(card, real.identity)
            caller.view.learn(card)
            with pytest.raises(PeerCallError) as refused:
                await caller.client.call(card.node_id, PING, peer_pb2.PingRequest(), peer_pb2.PingReply)
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.reason == "wrong_recipient"
            assert impostor.faulty.calls == 0 and caller.view.get(impostor.identity.node_id) is None
        finally:
            await caller.client.close()
            await real.stop()
            await impostor.stop()

    asyncio.run(scenario())
