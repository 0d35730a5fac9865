"""Hostile but well-formed Peer calls (hypothesis): cards and digests with arbitrary fields, some
signed by their own keys, sent by a peer the node knows. The node answers each with OK or a clear
status, keeps serving, and no card that fails validation ever enters its view."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.app import Node
from node.client import HELLO, check_health
from node.peers.cards import validate_card
from node.rpc.agora.v1 import node_pb2, peer_pb2, peer_pb2_grpc
from node.security.envelope import EnvelopeError, seal, sign_card
from node.security.identity import NodeIdentity
from node.store import read_saved_view
from tests.nodes import SignedCaller, loopback_settings, running_node

GOSSIP = "/agora.v1.Peer/Gossip"
CLEAR_STATUSES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}
KEYS = [NodeIdentity.load_or_create(Path(tempfile.mkdtemp(prefix="agora-fuzz-key-"))) for _ in range(4)]

text = st.text(max_size=80)
cards = st.builds(
    lambda key, sign, name, address, roles, teaches, issued, epsilon: _card(
        key, sign, name, address, roles, teaches, issued, epsilon
    ),
    key=st.sampled_from(KEYS),
    sign=st.booleans(),
    name=st.one_of(text, st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)),
    address=st.one_of(text, st.builds(lambda p: f"127.0.0.1:{p}", st.integers(0, 70000))),
    roles=st.lists(st.integers(0, 4), max_size=3),
    teaches=st.lists(text, max_size=3),
    issued=st.integers(-(2**40), 2**45),
    epsilon=st.floats(allow_nan=True, allow_infinity=True),
)
digests = st.builds(
    lambda node_id, at: peer_pb2.CardDigest(node_id=node_id, issued_at_unix_ms=at),
    st.one_of(text, st.sampled_from([k.node_id for k in KEYS])),
    st.integers(-(2**62), 2**62),
)


def _card(
    key: NodeIdentity,
    sign: bool,
    name: str,
    address: str,
    roles: list[int],
    teaches: list[str],
    issued: int,
    epsilon: float,
) -> node_pb2.NodeCard:
    card = node_pb2.NodeCard(name=name, address=address, issued_at_unix_ms=issued, epsilon_left=epsilon)
    card.roles.extend(roles)  # type: ignore[arg-type]  # out-of-range roles on purpose
    card.teaches.extend(teaches)
    if sign:
        sign_card(card, key)
    else:
        card.node_id, card.public_key = key.node_id, key.public_key
    return card


@pytest.fixture(scope="module")
def node_and_caller() -> Iterator[tuple[Node, str, SignedCaller]]:
    node = Node(
        loopback_settings(
            peers={"ping_interval_s": 0.2, "ping_timeout_s": 0.5, "dead_after_s": 5},
            security={"rate_limit_per_s": 10_000, "rate_limit_burst": 10_000},  # reach the handlers, not the limit
        )
    )
    with running_node(node) as addresses:
        caller = SignedCaller("fuzzer")
        with grpc.insecure_channel(addresses.grpc) as channel:
            request = caller.sealed(peer_pb2.HelloRequest(card=caller.card), HELLO)
            caller.server_id = peer_pb2_grpc.PeerStub(channel).Hello(request, timeout=10).card.node_id
        yield node, addresses.grpc, caller


def _status(call: object) -> grpc.StatusCode:
    try:
        assert callable(call)
        call()
    except grpc.RpcError as error:
        assert "Traceback" not in (error.details() or "")
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent_cards=st.lists(cards, max_size=4), sent_digests=st.lists(digests, max_size=4))
def test_hostile_gossip_gets_a_clear_status(
    node_and_caller: tuple[Node, str, SignedCaller], sent_cards: list[node_pb2.NodeCard], sent_digests: list[object]
) -> None:
    _, address, caller = node_and_caller
    request = caller.sealed(peer_pb2.GossipRequest(cards=sent_cards, digests=sent_digests), GOSSIP)  # type: ignore[arg-type]
    with grpc.insecure_channel(address) as channel:
        code = _status(lambda: peer_pb2_grpc.PeerStub(channel).Gossip(request, timeout=10))
    assert code in CLEAR_STATUSES, code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=cards)
def test_hostile_hello_cards_get_a_clear_status(
    node_and_caller: tuple[Node, str, SignedCaller], card: node_pb2.NodeCard
) -> None:
    _, address, _ = node_and_caller
    key = next(k for k in KEYS if k.node_id == card.node_id)
    request = peer_pb2.HelloRequest(card=card)
    seal(request, HELLO, key)  # signed by the card's own key: only the card itself can be wrong
    with grpc.insecure_channel(address) as channel:
        code = _status(lambda: peer_pb2_grpc.PeerStub(channel).Hello(request, timeout=10))
    assert code in CLEAR_STATUSES, code


def test_after_the_fuzzing_the_node_serves_and_its_view_holds_only_valid_cards(
    node_and_caller: tuple[Node, str, SignedCaller],
) -> None:
    node, address, _ = node_and_caller
    assert check_health(address).serving

    async def saved_cards() -> list[node_pb2.NodeCard]:
        await asyncio.sleep(0.5)  # a heartbeat: the view is saved
        view = read_saved_view(node.settings.node.data_dir)
        assert view is not None
        return [node_pb2.NodeCard.FromString(peer.card) for peer in view.peers]

    held = asyncio.run(saved_cards())
    assert any(card.name == "fuzzer" for card in held)
    for card in held:
        try:
            validate_card(card, max_skew_ms=30_000)
        except EnvelopeError as exc:
            raise AssertionError(f"an invalid card entered the view: {exc}") from None
