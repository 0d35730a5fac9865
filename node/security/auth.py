"""Authentication of every agora.v1 call, before its handler runs, and the signature on its reply.

Checks, in order; the first that fails answers its status with a sentence, names its reason in
the trailing metadata (``agora-auth-reason``) and counts in agora_auth_rejections_total{reason}:

    reason            status              what failed
    missing_envelope  UNAUTHENTICATED     no signed envelope in field 1
    bad_card          UNAUTHENTICATED or  Hello: the card is not self-signed, not the sender's,
                      INVALID_ARGUMENT    or malformed
    unknown_sender    UNAUTHENTICATED     not Hello, and the sender is not in the view (say Hello)
    bad_signature     UNAUTHENTICATED     the signature does not cover this message and method
    wrong_recipient   UNAUTHENTICATED     addressed to another node
    expired           UNAUTHENTICATED     timestamp outside security.max_clock_skew_s
    replayed          UNAUTHENTICATED     nonce already seen
    cert_mismatch     UNAUTHENTICATED     mTLS certificate name is not the sender card's name
    not_allowed       PERMISSION_DENIED   sender not on security.allow
    rate_limited      RESOURCE_EXHAUSTED  the sender's token bucket is empty (``retry-after-ms``)

Calls without a client certificate, with one from another CA, or in plaintext to an mTLS port
never get here: the TLS handshake refuses them and the caller sees UNAVAILABLE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message
from grpc import aio

from node.client import AUTH_REASON_KEY, HELLO, RETRY_AFTER_KEY
from node.config import Settings
from node.interceptors import replace_handler
from node.metrics import NodeMetrics
from node.peers.cards import validate_card
from node.peers.view import PeerView
from node.ratelimit import PeerRateLimiter
from node.rpc.agora.v1 import peer_pb2
from node.security.envelope import EnvelopeChecker, EnvelopeError, require_envelope, seal
from node.security.identity import NodeIdentity

if TYPE_CHECKING:
    Context = aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Any]
    _ServerInterceptor = aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = aio.ServerInterceptor

REJECTION_REASONS = (
    "missing_envelope",
    "bad_card",
    "unknown_sender",
    "bad_signature",
    "wrong_recipient",
    "expired",
    "replayed",
    "cert_mismatch",
    "not_allowed",
    "rate_limited",
)
AGORA_PREFIX = "/agora.v1."


def certificate_name(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The CN of the caller's verified client certificate; None on plaintext."""
    names = list(auth_context.get("x509_common_name") or ())
    return names[0].decode(errors="replace") if names else None


class AuthInterceptor(_ServerInterceptor):
    """Authenticates agora.v1 calls against the node's peer view and signs their replies."""

    def __init__(self, settings: Settings, identity: NodeIdentity, view: PeerView, metrics: NodeMetrics) -> None:
        security = settings.security
        self._identity = identity
        self._view = view
        self._metrics = metrics
        self._tls = not security.insecure
        self._checker = EnvelopeChecker(security.max_clock_skew_s, security.replay_cache_size)
        self._limiter = PeerRateLimiter(security.rate_limit_per_s, security.rate_limit_burst)
        for reason in REJECTION_REASONS:  # every series exists from the start, at 0
            metrics.auth_rejections.labels(reason=reason)

    async def intercept_service(  # type: ignore[override]  # None = "no such method", as grpc expects
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler: Handler | None = await continuation(handler_call_details)
        method = handler_call_details.method
        # Typed agora.v1 handlers only: the sentence for an unknown method takes raw bytes.
        if (
            handler is None
            or handler.unary_unary is None
            or handler.request_deserializer is None
            or not method.startswith(AGORA_PREFIX)
        ):
            return handler
        return replace_handler(handler, unary_unary=self._guarded(handler.unary_unary, method))

    def _guarded(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def call(request: Message, context: Context) -> Any:
            try:
                sender = self.authenticate(request, method, context.auth_context())
            except EnvelopeError as refusal:
                self._metrics.auth_rejections.labels(reason=refusal.reason).inc()
                trailers: list[tuple[str, str]] = [(AUTH_REASON_KEY, refusal.reason)]
                if refusal.retry_after_s is not None:
                    trailers.append((RETRY_AFTER_KEY, str(math.ceil(refusal.retry_after_s * 1000))))
                await context.abort(refusal.status, refusal.sentence, trailing_metadata=tuple(trailers))
            reply = await behavior(request, context)
            if reply is not None:  # a handler that aborted returns nothing
                seal(reply, method, self._identity, recipient_node_id=sender, reply=True)
            return reply

        return call

    def authenticate(self, request: Message, method: str, auth_context: Mapping[str, Iterable[bytes]]) -> str:
        """The verified sender's node_id, or EnvelopeError for the first check that fails."""
        envelope = require_envelope(request, method)
        card = None
        if method == HELLO:
            assert isinstance(request, peer_pb2.HelloRequest)
            card = request.card
            if card.node_id != envelope.sender_node_id:
                raise EnvelopeError("bad_card", "the Hello card's node_id is not the envelope's sender")
            validate_card(card, self._checker.max_skew_ms)

        def key_of(node_id: str) -> bytes | None:
            return card.public_key if card is not None else self._view.public_key_of(node_id)

        sender = self._checker.check(
            request, method, key_of, recipient=self._identity.node_id, anonymous_recipient_ok=card is not None
        )
        peer = self._view.get(sender)
        name = card.name if card is not None else peer.name if peer is not None else ""
        cert_name = certificate_name(auth_context) if self._tls else None
        if self._tls and cert_name != name:
            raise EnvelopeError(
                "cert_mismatch",
                f"the caller's certificate is for {cert_name!r} but the envelope is signed by {name!r} "
                f"({sender[:12]}…)",
            )
        if sender != self._identity.node_id and not self._view.allow.permits(sender, name):
            raise EnvelopeError(
                "not_allowed",
                f"{name!r} ({sender[:12]}…) is not on this node's allow-list (security.allow)",
                grpc.StatusCode.PERMISSION_DENIED,
            )
        retry_after = self._limiter.take(sender)
        if retry_after > 0:
            raise EnvelopeError(
                "rate_limited",
                f"{name!r} is over this node's rate limit of {self._limiter.rate:g} calls/s "
                f"(burst {self._limiter.burst}); retry after {retry_after:.2f}s",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                retry_after_s=retry_after,
            )
        if card is None:
            self._view.contact(sender)
        return sender
