"""The Peer gRPC service: Hello, Gossip and Ping, over the node's Membership.

Calls reach these handlers already authenticated (node.security.auth): the envelope's sender is
verified, and a Hello's card is self-signed and belongs to its sender.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from node.peers.membership import Membership
from node.peers.view import PeerState
from node.rpc.agora.v1 import peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:
    Context = aio.ServicerContext[Any, Any]

MAX_ENTRIES = 10_000  # digests or cards in one message: far above any real network, bounds the work


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, membership: Membership) -> None:
        self._membership = membership

    async def Hello(self, request: peer_pb2.HelloRequest, context: Context) -> peer_pb2.HelloReply:
        view = self._membership.view
        view.learn(request.card, direct=True)
        peers = [p.card for p in view.peers(PeerState.ALIVE) if p.node_id != request.card.node_id]
        return peer_pb2.HelloReply(card=self._membership.own_card(), peers=peers)

    async def Gossip(self, request: peer_pb2.GossipRequest, context: Context) -> peer_pb2.GossipReply:
        for field, entries in (("digests", request.digests), ("cards", request.cards)):
            if len(entries) > MAX_ENTRIES:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Gossip carries {len(entries)} {field}; at most {MAX_ENTRIES} are accepted",
                )
        self._membership.merge(request.cards, source=request.envelope.sender_node_id)
        own = self._membership.own_card()
        view = self._membership.view
        return peer_pb2.GossipReply(cards=view.newer_than(request.digests, own), wanted=view.wanted(request.digests))

    async def Ping(self, request: peer_pb2.PingRequest, context: Context) -> peer_pb2.PingReply:
        load = self._membership.own_load()
        load.in_flight_rpcs = max(load.in_flight_rpcs - 1, 0)  # not counting this Ping
        return peer_pb2.PingReply(sequence=request.sequence, load=load)
