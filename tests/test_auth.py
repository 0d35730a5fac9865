"""Who may call a node: mTLS at the transport, then the signed envelope, the allow-list and the
rate limit on every agora.v1 call. Real nodes, real certificates, real Ed25519 keys.

Each refusal is checked for its status, its sentence, its reason (trailing metadata and
agora_auth_rejections_total), and for what it must not do: stop the node serving everyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from node.app import Node
from node.client import AUTH_REASON_KEY, RETRY_AFTER_KEY, PeerCallError
from node.rpc.agora.v1 import peer_pb2, peer_pb2_grpc
from node.security.auth import REJECTION_REASONS
from node.security.certs import CertificateAuthority
from node.security.envelope import EnvelopeChecker, now_ms
from node.security.identity import NodeIdentity
from tests.nodes import FAST_PEERS, SignedCaller, alive_names, eventually, mtls_settings, started, tls_channel

PING = "/agora.v1.Peer/Ping"
Outcome = tuple[grpc.StatusCode, str, str | None]  # status, sentence, reason


def trailers_of(error: aio.AioRpcError) -> dict[str, str]:
    metadata: Any = error.trailing_metadata() or ()  # (key, value) pairs
    return {str(key): str(value) for key, value in metadata}


async def outcome(call: Awaitable[Any]) -> Outcome:
    """How a call ended: ("OK", "", None) or the error's status, details and auth reason."""
    try:
        await call
    except aio.AioRpcError as error:
        return error.code(), error.details() or "", trailers_of(error).get(AUTH_REASON_KEY)
    return grpc.StatusCode.OK, "", None


def rejections(node: Node, reason: str) -> float:
    return node.metrics.registry.get_sample_value("agora_auth_rejections_total", {"reason": reason}) or 0.0


async def ping(channel: aio.Channel, request: peer_pb2.PingRequest) -> peer_pb2.PingReply:
    reply: peer_pb2.PingReply = await peer_pb2_grpc.PeerStub(channel).Ping(request, timeout=10)
    return reply


def test_the_tls_handshake_refuses_strangers_and_the_node_keeps_serving() -> None:
    """No client certificate, a certificate from another CA, and plaintext to the mTLS port are
    refused by the handshake (UNAVAILABLE: no Python runs for them); a real peer stays joined and
    a signed caller with a network certificate is served before and after."""
    ca, rogue_ca = CertificateAuthority("agora-test-ca"), CertificateAuthority("rogue-ca")
    alice = Node(mtls_settings(ca, "alice", peers=FAST_PEERS))

    async def scenario() -> None:
        async with started(alice) as (address,):
            bob = Node(mtls_settings(ca, "bob", peers={**FAST_PEERS, "seeds": [address]}))
            async with started(bob):
                await eventually(lambda: alive_names(alice) == {"bob"}, what="bob joined alice")
                good = SignedCaller("carol")
                async with tls_channel(address, ca, ca.issue("carol"), "alice") as channel:
                    await good.hello(channel)
                    strangers = {
                        "no client certificate": tls_channel(address, ca, None, "alice"),
                        "another CA": tls_channel(address, rogue_ca, rogue_ca.issue("carol"), "alice"),
                        "plaintext": aio.insecure_channel(address),
                    }
                    for what, stranger in strangers.items():
                        async with stranger:
                            code, _, _ = await outcome(SignedCaller("carol").hello(stranger, timeout_s=5))
                            assert code == grpc.StatusCode.UNAVAILABLE, what
                        reply = await ping(channel, good.sealed(peer_pb2.PingRequest(sequence=7), PING))
                        assert reply.sequence == 7, what
                assert alive_names(alice) == {"bob", "carol"}
                assert "alice" in alive_names(bob)  # (it may have heard of carol by gossip too)

    asyncio.run(scenario())


def test_each_bad_envelope_is_refused_with_its_status_and_reason(tmp_path: Path) -> None:
    """Certificate name other than the declared sender, bad signature, tampered payload, replayed
    envelope, expired timestamp, unknown sender and wrong recipient: each gets UNAUTHENTICATED
    with a sentence and its reason, is counted, and the next good call is served."""
    ca = CertificateAuthority()
    alice = Node(mtls_settings(ca, "alice", peers=FAST_PEERS))
    bob, carol = SignedCaller("bob"), SignedCaller("carol")
    mallory = NodeIdentity.load_or_create(tmp_path)  # signs what bob claims to send

    async def scenario() -> None:
        async with (
            started(alice) as (address,),
            tls_channel(address, ca, ca.issue("bob"), "alice") as as_bob,
            tls_channel(address, ca, ca.issue("carol"), "alice") as as_carol,
        ):
            await bob.hello(as_bob)
            await carol.hello(as_carol)
            tampered = bob.sealed(peer_pb2.PingRequest(sequence=1), PING)
            tampered.sequence = 2
            forged = bob.sealed(peer_pb2.PingRequest(sequence=3), PING)
            forged.envelope.signature = mallory.sign(b"anything")
            replayed = bob.sealed(peer_pb2.PingRequest(sequence=4), PING)
            assert (await ping(as_bob, replayed)).sequence == 4
            stranger = SignedCaller("bob")  # a key alice never heard of, sending on bob's channel
            stranger.server_id = alice.identity.node_id
            cases: list[tuple[str, aio.Channel, peer_pb2.PingRequest, str]] = [
                ("cert_mismatch", as_carol, bob.sealed(peer_pb2.PingRequest(), PING), "certificate is for 'carol'"),
                ("bad_signature", as_bob, forged, "does not match this /agora.v1.Peer/Ping call"),
                ("bad_signature", as_bob, tampered, "does not match"),
                ("replayed", as_bob, replayed, "already received (replay)"),
                ("expired", as_bob, bob.sealed(peer_pb2.PingRequest(), PING, at_ms=now_ms() - 60_000), "behind"),
                ("unknown_sender", as_bob, stranger.sealed(peer_pb2.PingRequest(), PING), "say Hello first"),
                (
                    "wrong_recipient",
                    as_bob,
                    bob.sealed(peer_pb2.PingRequest(), PING, recipient_node_id="f" * 64),
                    "not to this node",
                ),
            ]
            for reason, channel, request, sentence in cases:
                before = rejections(alice, reason)
                code, details, said = await outcome(ping(channel, request))
                assert (code, said) == (grpc.StatusCode.UNAUTHENTICATED, reason), (reason, details)
                assert sentence in details and "Traceback" not in details, (reason, details)
                assert rejections(alice, reason) == before + 1
                served = await ping(as_bob, bob.sealed(peer_pb2.PingRequest(sequence=9), PING))
                assert served.sequence == 9, reason
        assert {r for r in REJECTION_REASONS if rejections(alice, r)} == {c[0] for c in cases}

    asyncio.run(scenario())


def test_replies_are_signed_by_the_node_and_addressed_to_the_caller() -> None:
    ca = CertificateAuthority()
    alice = Node(mtls_settings(ca, "alice", peers=FAST_PEERS))
    bob = SignedCaller("bob")

    async def scenario() -> None:
        async with started(alice) as (address,), tls_channel(address, ca, ca.issue("bob"), "alice") as channel:
            hello = await bob.hello(channel)
            reply = await ping(channel, bob.sealed(peer_pb2.PingRequest(sequence=5), PING))
        keys = {alice.identity.node_id: alice.identity.public_key}
        checker = EnvelopeChecker(30, 100)
        assert checker.check(hello, "/agora.v1.Peer/Hello", keys.get, recipient=bob.node_id, reply=True)
        assert checker.check(reply, PING, keys.get, recipient=bob.node_id, reply=True) == alice.identity.node_id
        with pytest.raises(Exception, match="does not match this reply"):
            reply.sequence = 6
            checker.check(reply, PING, keys.get, recipient=bob.node_id, reply=True)

    asyncio.run(scenario())


def test_only_allowed_peers_may_call_and_only_they_enter_the_view() -> None:
    """alice allows bob (by name) and no one else: carol, who holds a network certificate, is
    refused PERMISSION_DENIED; bob joins; alice's view holds bob only, even after gossip."""
    ca = CertificateAuthority()
    alice = Node(mtls_settings(ca, "alice", peers=FAST_PEERS, security={"allow": ["bob"]}))

    async def scenario() -> None:
        async with started(alice) as (address,):
            bob = Node(mtls_settings(ca, "bob", peers={**FAST_PEERS, "seeds": [address]}))
            carol = Node(mtls_settings(ca, "carol", peers={**FAST_PEERS, "seeds": [address]}))
            async with started(bob) as (bob_address,), started(carol):
                await eventually(lambda: alive_names(alice) == {"bob"}, what="bob joined")
                await eventually(lambda: rejections(alice, "not_allowed") >= 1, what="carol refused")
                with pytest.raises(PeerCallError) as refused:
                    await carol.client.hello(address, timeout_s=5, attempts=1)
                assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
                assert refused.value.reason == "not_allowed"
                assert "'carol'" in refused.value.details and "security.allow" in refused.value.details
                # carol meets bob (who allows anyone) and gossips; alice still keeps her out.
                await carol.client.hello(bob_address, timeout_s=5)
                await eventually(lambda: "carol" in alive_names(bob), what="carol met bob")
                await asyncio.sleep(1.0)  # several gossip rounds
                assert alive_names(alice) == {"bob"}

    asyncio.run(scenario())


def test_a_peer_over_its_rate_limit_is_told_when_to_retry() -> None:
    """With 2 calls/s and a burst of 3, a fourth quick call gets RESOURCE_EXHAUSTED, a sentence
    and a retry-after hint; after waiting that long the peer is served again."""
    ca = CertificateAuthority()
    alice = Node(mtls_settings(ca, "alice", security={"rate_limit_per_s": 2.0, "rate_limit_burst": 3}))
    bob = SignedCaller("bob")

    async def scenario() -> None:
        async with started(alice) as (address,), tls_channel(address, ca, ca.issue("bob"), "alice") as channel:
            await bob.hello(channel)  # the first token
            for sequence in (1, 2):
                assert (await ping(channel, bob.sealed(peer_pb2.PingRequest(sequence=sequence), PING))).sequence
            try:
                await ping(channel, bob.sealed(peer_pb2.PingRequest(sequence=3), PING))
            except aio.AioRpcError as error:
                limited = error
            else:
                raise AssertionError("the fourth call within the burst was served")
            assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = trailers_of(limited)
            assert trailers[AUTH_REASON_KEY] == "rate_limited"
            retry_after_ms = int(trailers[RETRY_AFTER_KEY])
            assert 0 < retry_after_ms <= 500
            assert "rate limit of 2 calls/s (burst 3); retry after" in (limited.details() or "")
            await asyncio.sleep(retry_after_ms / 1000)
            assert (await ping(channel, bob.sealed(peer_pb2.PingRequest(sequence=4), PING))).sequence == 4
        assert rejections(alice, "rate_limited") == 1

    asyncio.run(scenario())
