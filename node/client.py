"""Outgoing calls: to peers (`PeerClient`: signed envelopes, deadlines, retries), and the
standard gRPC health check and reflection listing used by the CLI.

Every call to a peer is sealed with this node's key and addressed to the peer's node_id; its
reply must be signed by that peer and addressed back. A call has a deadline, always. Only
UNAVAILABLE is retried (the peer may be restarting, or a connection dropped), with exponential
back-off and full jitter, each attempt re-sealed with a fresh nonce so that a first attempt
that did arrive cannot make the retry look like a replay. Peers the view holds dead are not
called at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.config import Settings
from node.metrics import NodeMetrics
from node.peers.cards import validate_card
from node.peers.view import PeerState, PeerView
from node.rpc.agora.v1 import node_pb2, peer_pb2
from node.security.envelope import EnvelopeChecker, EnvelopeError, seal
from node.security.identity import NodeIdentity, node_id_of

log = logging.getLogger("agora.client")

Reply = TypeVar("Reply", bound=Message)

HELLO = "/agora.v1.Peer/Hello"
AUTH_REASON_KEY = "agora-auth-reason"  # trailing metadata: why authentication refused a call
RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata: when a rate-limited caller may try again
MAX_BACKOFF_S = 5.0


class PeerCallError(Exception):
    """A call to a peer that did not succeed: the final status, and its sentence."""

    def __init__(
        self,
        peer: str,
        method: str,
        code: grpc.StatusCode,
        details: str,
        retry_after_s: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.peer, self.method, self.code, self.details = peer, method, code, details
        self.retry_after_s = retry_after_s  # from a rate limit's retry-after hint
        self.reason = reason  # why authentication refused the call (agora_auth_rejections_total's label)
        super().__init__(f"{method.rsplit('/', 1)[-1]} to {peer}: {code.name}: {details}")


def _trailer(error: aio.AioRpcError, key: str) -> str | None:
    metadata: Any = error.trailing_metadata() or ()  # (key, value) pairs; the stubs say otherwise
    for item_key, value in metadata:
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return None


@dataclass(frozen=True)
class _Target:
    address: str
    server_name: str | None  # the certificate name the server must present (mTLS)


class PeerClient:
    """Channels to peers (one per address and certificate name) and signed calls over them."""

    def __init__(
        self,
        settings: Settings,
        identity: NodeIdentity,
        view: PeerView,
        own_card: Callable[[], node_pb2.NodeCard],
        credentials: grpc.ChannelCredentials | None,
        metrics: NodeMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._peers = settings.peers
        self._max_message_bytes = settings.node.max_message_bytes
        self._identity = identity
        self._view = view
        self._own_card = own_card
        self._credentials = credentials
        self._metrics = metrics
        self._rng = rng or random.Random()
        # Replies carry fresh nonces too; a separate cache keeps them apart from requests.
        self._replies = EnvelopeChecker(settings.security.max_clock_skew_s, settings.security.replay_cache_size)
        self._channels: dict[_Target, aio.Channel] = {}
        self._target_by_peer: dict[str, _Target] = {}  # a peer that moved leaves its old channel behind

    # --- channels ------------------------------------------------------------------------------

    def _channel(self, target: _Target) -> aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            options: list[tuple[str, Any]] = [
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.enable_retries", 0),  # retries are ours: re-sealed, UNAVAILABLE only
                # A restarted peer must be reachable again within a heartbeat or two, not after
                # grpc's default reconnect back-off of up to two minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self._credentials is None:
                channel = aio.insecure_channel(target.address, options=options)
            else:
                if target.server_name:
                    options.append(("grpc.ssl_target_name_override", target.server_name))
                channel = aio.secure_channel(target.address, self._credentials, options=options)
            self._channels[target] = channel
        return channel

    def _target_of(self, card: node_pb2.NodeCard) -> _Target:
        # Peers are verified under their node name (always a SAN of their certificate), whatever
        # address they advertise: that binds the TLS connection to the card's name.
        return _Target(card.address, card.name if self._credentials is not None else None)

    async def forget(self, card: node_pb2.NodeCard) -> None:
        """Close the channel to a peer that died or left, so a comeback starts afresh."""
        channel = self._channels.pop(self._target_of(card), None)
        if channel is not None:
            await channel.close(None)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)

    # --- calls ---------------------------------------------------------------------------------

    async def call(
        self,
        node_id: str,
        method: str,
        request: Message,
        reply_type: type[Reply],
        timeout_s: float | None = None,
        attempts: int | None = None,
    ) -> Reply:
        """Call ``method`` on a peer of the view; the verified reply, or PeerCallError.

        If the peer no longer knows this node (it forgot us, or restarted with an empty view)
        it answers UNAUTHENTICATED/unknown_sender; then we say Hello and try once more.
        """
        peer = self._view.get(node_id)
        if peer is None:
            raise PeerCallError(node_id[:12], method, grpc.StatusCode.NOT_FOUND, "not a peer in this node's view")
        if peer.state is PeerState.DEAD:
            raise PeerCallError(
                peer.name, method, grpc.StatusCode.UNAVAILABLE, "the peer is dead in this node's view; not calling it"
            )
        target = self._target_of(peer.card)
        moved_from = self._target_by_peer.get(node_id)
        if moved_from is not None and moved_from != target and (old := self._channels.pop(moved_from, None)):
            await old.close(None)
        self._target_by_peer[node_id] = target
        try:
            reply = await self._invoke(target, method, request, reply_type, peer.node_id, timeout_s, attempts)
        except PeerCallError as error:
            if error.reason != "unknown_sender":
                raise
            hello = await self.hello(target.address, target.server_name, expected_node_id=node_id, timeout_s=timeout_s)
            self._view.learn(hello.card, direct=True)
            reply = await self._invoke(target, method, request, reply_type, peer.node_id, timeout_s, attempts)
        self._view.contact(node_id)
        return reply

    async def hello(
        self,
        address: str,
        server_name: str | None = None,
        expected_node_id: str = "",
        timeout_s: float | None = None,
        attempts: int | None = None,
    ) -> peer_pb2.HelloReply:
        """Say Hello to the node at ``address`` (a seed, or a peer that forgot us) with our card.

        The reply's card must be self-signed and must have signed the reply; when we knew whom we
        were calling (``expected_node_id``), it must be that node.
        """
        request = peer_pb2.HelloRequest(card=self._own_card())
        target = _Target(address, server_name if self._credentials is not None else None)
        reply = await self._invoke(
            target, HELLO, request, peer_pb2.HelloReply, expected_node_id, timeout_s, attempts, reply_card=True
        )
        try:
            validate_card(reply.card, self._replies.max_skew_ms)
        except EnvelopeError as exc:
            raise PeerCallError(address, HELLO, grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        return reply

    async def _invoke(
        self,
        target: _Target,
        method: str,
        request: Message,
        reply_type: type[Reply],
        recipient: str,
        timeout_s: float | None,
        attempts: int | None,
        reply_card: bool = False,
    ) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s if timeout_s is not None else self._peers.call_timeout_s)
        tries = attempts if attempts is not None else self._peers.max_attempts
        call = self._channel(target).unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=reply_type.FromString
        )
        who = target.server_name or target.address
        for attempt in range(1, tries + 1):
            remaining = deadline - loop.time()
            seal(request, method, self._identity, recipient)
            try:
                reply: Reply = await call(request, timeout=max(remaining, 0.001))
            except aio.AioRpcError as error:
                code = error.code()
                backoff = min(MAX_BACKOFF_S, self._peers.retry_backoff_s * 2 ** (attempt - 1)) * self._rng.random()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < tries and loop.time() + backoff < deadline:
                    log.debug("%s to %s: UNAVAILABLE, retry %d in %.2fs", method, who, attempt, backoff)
                    await asyncio.sleep(backoff)
                    continue
                self._count(method, code.name)
                retry_after = _trailer(error, RETRY_AFTER_KEY)
                raise PeerCallError(
                    who,
                    method,
                    code,
                    error.details() or code.name,
                    float(retry_after) / 1000 if retry_after and retry_after.isdigit() else None,
                    _trailer(error, AUTH_REASON_KEY),
                ) from None
            self._verify(reply, method, recipient, who, reply_card)
            self._count(method, "OK")
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _verify(self, reply: Message, method: str, expected: str, who: str, reply_card: bool) -> None:
        card: node_pb2.NodeCard | None = getattr(reply, "card", None) if reply_card else None

        def key_of(node_id: str) -> bytes | None:
            if card is not None and node_id == card.node_id and node_id_of(card.public_key) == node_id:
                return card.public_key
            return self._view.public_key_of(node_id)

        try:
            sender = self._replies.check(reply, method, key_of, recipient=self._identity.node_id, reply=True)
        except EnvelopeError as exc:
            self._count(method, "UNAUTHENTICATED")
            raise PeerCallError(who, method, grpc.StatusCode.UNAUTHENTICATED, f"reply refused: {exc}") from None
        if expected and sender != expected:
            self._count(method, "UNAUTHENTICATED")
            sentence = f"the reply came from {sender[:12]}…, not {expected[:12]}…"
            raise PeerCallError(who, method, grpc.StatusCode.UNAUTHENTICATED, sentence)

    def _count(self, method: str, code: str) -> None:
        if self._metrics is not None:
            self._metrics.peer_calls.labels(method=method.rsplit("/", 1)[-1], code=code).inc()


# --- health and reflection (CLI) -----------------------------------------------------------------


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
