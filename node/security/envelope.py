"""Signed envelopes and cards: the signing bytes of the wire contract, sealing and checking.

Signing bytes (proto/agora/v1/node.proto): a domain tag, then the message serialized with
protobuf's deterministic serialization after its own signature is cleared. For an envelope the
tag is the full gRPC method name (plus " reply" for replies), so a signed message can be
neither altered nor replayed against another method or direction; for a NodeCard it is
"agora.v1.NodeCard".

A receiver's checks, in order: an envelope is present, the sender is known, the signature
holds, the message is addressed to this node, the timestamp is within the allowed skew, and
the nonce is fresh. Each failure is an `EnvelopeError` carrying the gRPC status, a sentence
and a short reason label for metrics.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf.message import Message

from node.rpc.agora.v1 import node_pb2
from node.security.identity import NodeIdentity, node_id_of, verify_signature

NONCE_BYTES = 16
CARD_DOMAIN = b"agora.v1.NodeCard\n"
REPLY_TAG = " reply"


class Enveloped(Protocol):
    """Any request or reply: field 1 is its Envelope."""

    @property
    def envelope(self) -> node_pb2.Envelope: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


@dataclass
class EnvelopeError(Exception):
    """A message that fails a check: answer `status` with `sentence`; count it under `reason`."""

    reason: str  # a metric label; see node.security.auth.REJECTION_REASONS
    sentence: str
    status: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
    retry_after_s: float | None = None  # rate limits: when the caller may try again

    def __str__(self) -> str:
        return self.sentence


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _without_signature(message: Message, clear: Callable[[Message], None]) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    clear(copy)
    return copy.SerializeToString(deterministic=True)


def _domain(method: str, reply: bool) -> bytes:
    return (method + (REPLY_TAG if reply else "")).encode() + b"\n"


def envelope_signing_bytes(message: Message, method: str, reply: bool = False) -> bytes:
    """What an envelope's signature covers: the method name (and direction), then the message
    without the signature."""
    unsigned = _without_signature(message, lambda m: m.envelope.ClearField("signature"))  # type: ignore[attr-defined]
    return _domain(method, reply) + unsigned


def seal(
    message: Message,
    method: str,
    identity: NodeIdentity,
    recipient_node_id: str = "",
    at_ms: int | None = None,
    reply: bool = False,
) -> None:
    """Fill message.envelope (sender, recipient, time, fresh nonce) and sign it, in place."""
    envelope: node_pb2.Envelope = message.envelope  # type: ignore[attr-defined]
    envelope.sender_node_id = identity.node_id
    envelope.recipient_node_id = recipient_node_id
    envelope.timestamp_unix_ms = now_ms() if at_ms is None else at_ms
    envelope.nonce = os.urandom(NONCE_BYTES)
    envelope.signature = identity.sign(envelope_signing_bytes(message, method, reply))


def card_signing_bytes(card: node_pb2.NodeCard) -> bytes:
    return CARD_DOMAIN + _without_signature(card, lambda m: m.ClearField("signature"))


def sign_card(card: node_pb2.NodeCard, identity: NodeIdentity) -> None:
    """Set the card's node_id and public key from identity, then sign it, in place."""
    card.node_id, card.public_key = identity.node_id, identity.public_key
    card.signature = identity.sign(card_signing_bytes(card))


def check_card(card: node_pb2.NodeCard) -> None:
    """EnvelopeError unless the card is signed by the key whose hash is its node_id."""
    if node_id_of(card.public_key) != card.node_id:
        raise EnvelopeError("bad_card", f"the card's node_id {card.node_id[:12]}… is not the hash of its public key")
    if not verify_signature(card.public_key, card_signing_bytes(card), card.signature):
        raise EnvelopeError("bad_card", f"the card of {card.node_id[:12]}… is not signed by its own key")


def require_envelope(message: Message, method: str) -> node_pb2.Envelope:
    """The message's envelope; EnvelopeError (missing_envelope) when it has none or it is unsigned."""
    if not message.HasField("envelope") or not message.envelope.signature:  # type: ignore[attr-defined]
        raise EnvelopeError("missing_envelope", f"{method} needs a signed envelope (field 1)")
    envelope: node_pb2.Envelope = message.envelope  # type: ignore[attr-defined]
    return envelope


class ReplayCache:
    """Nonces seen within the timestamp window, bounded in size (oldest forgotten first).

    A nonce older than the window needs no memory: its timestamp is refused as expired.
    """

    def __init__(self, capacity: int, window_ms: int) -> None:
        self.capacity, self.window_ms = capacity, window_ms
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, sender: str, nonce: bytes, at_ms: int) -> bool:
        """False when (sender, nonce) was already admitted; otherwise remember it and say True."""
        key = (sender, nonce)
        if key in self._seen:
            return False
        self._seen[key] = at_ms
        while self._seen and (
            len(self._seen) > self.capacity or next(iter(self._seen.values())) < at_ms - 2 * self.window_ms
        ):
            self._seen.popitem(last=False)
        return True


class EnvelopeChecker:
    """Checks incoming envelopes against known senders' keys, the clock and the replay cache."""

    def __init__(self, max_skew_s: float, replay_cache_size: int) -> None:
        self.max_skew_ms = int(max_skew_s * 1000)
        self.replays = ReplayCache(replay_cache_size, self.max_skew_ms)

    def check(
        self,
        message: Message,
        method: str,
        public_key_of: Callable[[str], bytes | None],
        at_ms: int | None = None,
        recipient: str | None = None,
        reply: bool = False,
        anonymous_recipient_ok: bool = False,
    ) -> str:
        """The sender's node_id when every check passes; EnvelopeError naming the first that fails.

        ``recipient`` is this node's id, which the envelope must name (None skips the check);
        ``anonymous_recipient_ok`` also accepts an empty one, for a first Hello to a seed whose
        id the caller cannot know yet.
        """
        envelope = require_envelope(message, method)
        sender = envelope.sender_node_id
        public_key = public_key_of(sender)
        if public_key is None:
            raise EnvelopeError(
                "unknown_sender", f"sender {sender[:12] or '(empty)'}… is not a known peer; say Hello first"
            )
        if not verify_signature(public_key, envelope_signing_bytes(message, method, reply), envelope.signature):
            what = f"reply to {method}" if reply else f"{method} call"
            raise EnvelopeError("bad_signature", f"the signature of {sender[:12]}… does not match this {what}")
        addressed_to = envelope.recipient_node_id
        if recipient is not None and addressed_to != recipient and not (anonymous_recipient_ok and not addressed_to):
            raise EnvelopeError(
                "wrong_recipient",
                f"the envelope is addressed to {addressed_to[:12] or '(nobody)'}…, "
                f"not to this node ({recipient[:12]}…)",
            )
        at_ms = now_ms() if at_ms is None else at_ms
        skew = envelope.timestamp_unix_ms - at_ms
        if abs(skew) > self.max_skew_ms:
            raise EnvelopeError(
                "expired",
                f"the envelope's timestamp is {abs(skew) / 1000:.1f}s {'ahead of' if skew > 0 else 'behind'} this "
                f"node's clock (allowed: {self.max_skew_ms / 1000:g}s)",
            )
        if not self.replays.admit(sender, envelope.nonce, at_ms):
            raise EnvelopeError("replayed", f"this envelope from {sender[:12]}… was already received (replay)")
        return sender
