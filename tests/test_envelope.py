"""Signed envelopes and cards, the replay cache and per-peer token buckets (pure logic, real keys)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from node.ratelimit import PeerRateLimiter, TokenBucket
from node.rpc.agora.v1 import node_pb2, peer_pb2
from node.security.envelope import (
    EnvelopeChecker,
    EnvelopeError,
    ReplayCache,
    check_card,
    seal,
    sign_card,
)
from node.security.identity import NodeIdentity

PING = "/agora.v1.Peer/Ping"
T0 = 1_800_000_000_000


@pytest.fixture
def alice(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path / "alice")


@pytest.fixture
def mallory(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path / "mallory")


def _ping(identity: NodeIdentity, sequence: int = 7, at_ms: int = T0) -> peer_pb2.PingRequest:
    request = peer_pb2.PingRequest(sequence=sequence)
    seal(request, PING, identity, recipient_node_id="bob", at_ms=at_ms)
    return request


def _check(checker: EnvelopeChecker, message: peer_pb2.PingRequest, keys: dict[str, bytes], at_ms: int = T0) -> str:
    return checker.check(message, PING, keys.get, at_ms)


def test_a_sealed_request_passes_once(alice: NodeIdentity) -> None:
    checker, keys = EnvelopeChecker(30, 1000), {alice.node_id: alice.public_key}
    request = _ping(alice)
    assert len(request.envelope.nonce) == 16 and len(request.envelope.signature) == 64
    assert _check(checker, request, keys) == alice.node_id
    with pytest.raises(EnvelopeError) as replay:
        _check(checker, request, keys)
    assert replay.value.reason == "replayed" and replay.value.status == grpc.StatusCode.UNAUTHENTICATED


def test_each_forgery_is_refused_with_its_reason(alice: NodeIdentity, mallory: NodeIdentity, tmp_path: Path) -> None:
    keys = {alice.node_id: alice.public_key, mallory.node_id: mallory.public_key}
    tampered = _ping(alice)
    tampered.sequence = 8  # payload changed after signing
    impostor = _ping(mallory)
    impostor.envelope.sender_node_id = alice.node_id  # claims to be alice, signed by mallory
    cases: list[tuple[peer_pb2.PingRequest, str, int, str]] = [
        (tampered, "bad_signature", T0, "does not match"),
        (impostor, "bad_signature", T0, "does not match"),
        (_ping(alice, at_ms=T0 - 31_000), "expired", T0, "31.0s behind"),
        (_ping(alice, at_ms=T0 + 45_000), "expired", T0, "45.0s ahead of"),
        (peer_pb2.PingRequest(sequence=1), "missing_envelope", T0, "needs a signed envelope"),
        (_ping(NodeIdentity.load_or_create(tmp_path / "stranger")), "unknown_sender", T0, "say Hello first"),
    ]
    for message, reason, at_ms, sentence in cases:
        with pytest.raises(EnvelopeError) as refused:
            _check(EnvelopeChecker(30, 1000), message, keys, at_ms)
        assert refused.value.reason == reason and sentence in str(refused.value), (reason, str(refused.value))


def test_a_signature_is_bound_to_its_method(alice: NodeIdentity) -> None:
    request = _ping(alice)
    with pytest.raises(EnvelopeError, match=r"does not match this /agora\.v1\.Peer/Gossip call"):
        EnvelopeChecker(30, 1000).check(request, "/agora.v1.Peer/Gossip", {alice.node_id: alice.public_key}.get, T0)


def test_cards_are_self_certifying(alice: NodeIdentity, mallory: NodeIdentity) -> None:
    card = node_pb2.NodeCard(name="alice", address="127.0.0.1:5000", issued_at_unix_ms=T0)
    sign_card(card, alice)
    check_card(card)
    assert card.node_id == alice.node_id
    forged = node_pb2.NodeCard()
    forged.CopyFrom(card)
    forged.address = "10.6.6.6:5000"
    with pytest.raises(EnvelopeError, match="not signed by its own key"):
        check_card(forged)
    swapped = node_pb2.NodeCard()
    swapped.CopyFrom(card)
    swapped.public_key = mallory.public_key
    with pytest.raises(EnvelopeError, match="is not the hash of its public key"):
        check_card(swapped)


def test_the_replay_cache_stays_bounded() -> None:
    cache = ReplayCache(capacity=100, window_ms=1000)
    for i in range(1000):
        assert cache.admit("peer", i.to_bytes(16, "big"), T0)
    assert len(cache) == 100
    assert not cache.admit("peer", (999).to_bytes(16, "big"), T0)
    assert cache.admit("peer", b"late", T0 + 10_000) and len(cache) == 1  # entries past the window are dropped


def test_token_buckets_refill_and_say_when_to_retry() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(0.5)
    limiter = PeerRateLimiter(rate=1.0, burst=1, clock=lambda: now[0], max_peers=2)
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0 and limiter.take("b") == 0.0
    assert limiter.take("c") == 0.0 and limiter.take("a") == 0.0  # "a" was forgotten to make room
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_a_signature_is_bound_to_its_direction(alice: NodeIdentity) -> None:
    """A signed request cannot be passed off as a reply (or back): " reply" is in the signed bytes."""
    keys = {alice.node_id: alice.public_key}.get
    request = _ping(alice)
    with pytest.raises(EnvelopeError, match=r"does not match this reply to /agora\.v1\.Peer/Ping"):
        EnvelopeChecker(30, 1000).check(request, PING, keys, T0, reply=True)
    reply = peer_pb2.PingReply(sequence=7)
    seal(reply, PING, alice, recipient_node_id="bob", at_ms=T0, reply=True)
    assert EnvelopeChecker(30, 1000).check(reply, PING, keys, T0, recipient="bob", reply=True) == alice.node_id
    with pytest.raises(EnvelopeError, match=r"does not match this /agora\.v1\.Peer/Ping call"):
        EnvelopeChecker(30, 1000).check(reply, PING, keys, T0)


def test_an_envelope_must_name_its_recipient(alice: NodeIdentity) -> None:
    keys = {alice.node_id: alice.public_key}.get
    to_bob = _ping(alice)  # addressed to "bob"
    assert EnvelopeChecker(30, 1000).check(to_bob, PING, keys, T0, recipient="bob") == alice.node_id
    with pytest.raises(EnvelopeError) as refused:
        EnvelopeChecker(30, 1000).check(to_bob, PING, keys, T0, recipient="carol")
    assert refused.value.reason == "wrong_recipient" and "addressed to bob…, not to this node" in str(refused.value)
    anonymous = peer_pb2.PingRequest()
    seal(anonymous, PING, alice, recipient_node_id="", at_ms=T0)
    with pytest.raises(EnvelopeError, match="addressed to \\(nobody\\)"):
        EnvelopeChecker(30, 1000).check(anonymous, PING, keys, T0, recipient="carol")
    checked = EnvelopeChecker(30, 1000).check(anonymous, PING, keys, T0, recipient="carol", anonymous_recipient_ok=True)
    assert checked == alice.node_id  # a first Hello to a seed cannot know the seed's id
