"""Membership bookkeeping without a network: the view's state machine (on a clock the test
turns), card issuing and validation, seeds, and the store that keeps the view on disk."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from node.peers.cards import CardIssuer, validate_card
from node.peers.seeds import JoinTarget, resolve_seeds
from node.peers.view import AllowList, PeerState, PeerView, Timings, Transition
from node.rpc.agora.v1 import node_pb2, peer_pb2
from node.security.envelope import EnvelopeError, now_ms, sign_card
from node.security.identity import NodeIdentity
from node.store import STORE_FILE, PeerRecord, Store, StoreError, read_saved_view
from tests.nodes import Clock

TIMINGS = Timings(suspect_after_missed=3, dead_after_s=10.0, forget_after_s=60.0)


def card_for(identity: NodeIdentity, name: str, issued_at: int, address: str = "127.0.0.1:5000") -> node_pb2.NodeCard:
    card = node_pb2.NodeCard(
        name=name,
        address=address,
        roles=[node_pb2.ROLE_STUDENT],
        issued_at_unix_ms=issued_at,
        model=node_pb2.ModelInfo(id="tiny:llama"),
    )
    sign_card(card, identity)
    return card


@pytest.fixture
def identities(tmp_path: Path) -> dict[str, NodeIdentity]:
    return {name: NodeIdentity.load_or_create(tmp_path / name) for name in ("me", "bob", "carol")}


def test_a_silent_peer_goes_suspect_dead_forgotten_and_contact_revives_it(
    identities: dict[str, NodeIdentity],
) -> None:
    clock = Clock()
    view = PeerView(identities["me"].node_id, TIMINGS, clock=clock)
    seen: list[Transition] = []
    view.listeners.append(seen.append)
    bob = card_for(identities["bob"], "bob", 100)
    assert view.learn(bob, direct=True)
    assert view.get(bob.node_id) is not None and view.get(bob.node_id).state is PeerState.ALIVE  # type: ignore[union-attr]

    for _ in range(2):
        view.missed(bob.node_id, "UNAVAILABLE")
    assert view.counts()[PeerState.ALIVE] == 1  # 2 misses: not yet
    view.missed(bob.node_id, "UNAVAILABLE")
    assert view.counts()[PeerState.SUSPECT] == 1
    view.contact(bob.node_id)
    assert view.counts()[PeerState.ALIVE] == 1  # an answer clears suspicion and the miss count

    clock.now += 10.0
    view.tick()
    assert view.counts()[PeerState.ALIVE] == 1  # dead only *after* dead_after_s
    clock.now += 0.5
    view.tick()
    assert view.counts()[PeerState.DEAD] == 1
    view.missed(bob.node_id, "UNAVAILABLE")  # the dead are not pinged; a stray miss changes nothing
    assert view.counts()[PeerState.DEAD] == 1
    clock.now += 50.0
    view.tick()
    assert len(view) == 0
    assert [(t.old, t.new) for t in seen] == [
        (None, PeerState.ALIVE),
        (PeerState.ALIVE, PeerState.SUSPECT),
        (PeerState.SUSPECT, PeerState.ALIVE),
        (PeerState.ALIVE, PeerState.DEAD),
        (PeerState.DEAD, None),
    ]


def test_only_a_newer_card_revives_a_dead_peer(identities: dict[str, NodeIdentity]) -> None:
    clock = Clock()
    view = PeerView(identities["me"].node_id, TIMINGS, clock=clock)
    view.learn(card_for(identities["bob"], "bob", 100))
    clock.now += 11
    view.tick()
    same = card_for(identities["bob"], "bob", 100)
    assert not view.learn(same) and view.counts()[PeerState.DEAD] == 1  # a relayed old card is no sign of life
    restarted = card_for(identities["bob"], "bob", 200, address="127.0.0.1:6000")
    assert view.learn(restarted)
    peer = view.get(restarted.node_id)
    assert peer is not None and peer.state is PeerState.ALIVE and peer.card.address == "127.0.0.1:6000"


def test_anti_entropy_offers_live_cards_and_asks_for_newer_ones(identities: dict[str, NodeIdentity]) -> None:
    clock = Clock()
    me = identities["me"]
    view = PeerView(me.node_id, TIMINGS, clock=clock)
    own = card_for(me, "me", 50)
    bob, carol = card_for(identities["bob"], "bob", 100), card_for(identities["carol"], "carol", 100)
    view.learn(bob)
    view.learn(carol)
    assert {d.node_id for d in view.digests(own)} == {me.node_id, bob.node_id, carol.node_id}

    theirs = [
        peer_pb2.CardDigest(node_id=bob.node_id, issued_at_unix_ms=100),  # same as ours
        peer_pb2.CardDigest(node_id=carol.node_id, issued_at_unix_ms=150),  # newer than ours
        peer_pb2.CardDigest(node_id="d" * 64, issued_at_unix_ms=1),  # unknown to us
        peer_pb2.CardDigest(node_id=me.node_id, issued_at_unix_ms=10),  # an old card of ours
    ]
    assert view.wanted(theirs) == [carol.node_id, "d" * 64]
    assert [c.node_id for c in view.newer_than(theirs, own)] == [me.node_id]

    clock.now += 11
    view.tick()  # both dead: no longer offered
    assert [d.node_id for d in view.digests(own)] == [me.node_id]
    assert [c.node_id for c in view.newer_than([], own)] == [me.node_id]


def test_the_allow_list_keeps_others_out_of_the_view(identities: dict[str, NodeIdentity]) -> None:
    bob, carol = card_for(identities["bob"], "bob", 1), card_for(identities["carol"], "carol", 1)
    by_name = PeerView(identities["me"].node_id, TIMINGS, AllowList(["bob"]))
    assert by_name.learn(bob) and not by_name.learn(carol)
    by_id = PeerView(identities["me"].node_id, TIMINGS, AllowList([carol.node_id]))
    assert not by_id.learn(bob) and by_id.learn(carol)
    assert not by_id.learn(card_for(identities["me"], "me", 1))  # never itself


def test_the_card_is_reissued_when_its_content_changes_and_load_refreshes_slowly(
    identities: dict[str, NodeIdentity],
) -> None:
    content = node_pb2.NodeCard(name="me", address="127.0.0.1:1", roles=[node_pb2.ROLE_TEACHER])
    clock = [1_000_000]
    issuer = CardIssuer(identities["me"], lambda: _copy(content), load_refresh_s=5, clock_ms=lambda: clock[0])
    first = issuer.current()
    validate_card(first, max_skew_ms=30_000, at_ms=clock[0])
    assert first.node_id == identities["me"].node_id and first.issued_at_unix_ms == 1_000_000

    clock[0] += 1000
    assert issuer.current() is first  # nothing changed
    content.load.in_flight_rpcs = 3
    assert issuer.current() is first  # load alone: not before load_refresh_s
    clock[0] += 4000
    assert issuer.current().load.in_flight_rpcs == 3
    content.teaches.append("arithmetic")
    clock[0] += 1
    changed = issuer.current()
    assert list(changed.teaches) == ["arithmetic"] and changed.issued_at_unix_ms == clock[0]

    issuer.supersede(clock[0] + 60_000)  # a card of ours from before a restart, clock gone back
    assert issuer.current().issued_at_unix_ms == clock[0] + 60_001


def _copy(card: node_pb2.NodeCard) -> node_pb2.NodeCard:
    copy = node_pb2.NodeCard()
    copy.CopyFrom(card)
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name!"}, "name: String should match pattern"),
        ({"address": "nowhere"}, "address: expected HOST:PORT"),
        ({"roles": []}, "roles: List should have at least 1 item"),
        ({"roles": [1, 1]}, "roles must be distinct"),
        ({"roles": [7]}, "roles must be distinct and each ROLE_TEACHER or ROLE_STUDENT"),
        ({"teaches": ["x"] * 65}, "teaches: List should have at most 64 items"),
        ({"epsilon_left": float("nan")}, "epsilon_left"),
        ({"issued_at_unix_ms": 0}, "issued_at_unix_ms: Input should be greater than 0"),
        ({"issued_at_unix_ms": "future"}, "issued 120.0s in the future"),
    ],
)
def test_a_malformed_card_is_refused_even_when_signed(
    identities: dict[str, NodeIdentity], change: dict[str, object], message: str
) -> None:
    at = now_ms()
    fields = {"issued_at_unix_ms": at + 120_000} if change.get("issued_at_unix_ms") == "future" else change
    card = node_pb2.NodeCard(name="bob", address="127.0.0.1:5000", issued_at_unix_ms=at)
    card.roles.append(node_pb2.ROLE_STUDENT)
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(card, key)[:]
            getattr(card, key).extend(value)
        else:
            setattr(card, key, value)
    sign_card(card, identities["bob"])
    with pytest.raises(EnvelopeError) as refused:
        validate_card(card, max_skew_ms=30_000, at_ms=at)
    assert refused.value.reason == "bad_card" and message in str(refused.value)


def test_seeds_resolve_to_every_address_and_skip_names_that_do_not(caplog: pytest.LogCaptureFixture) -> None:
    seeds = ["10.0.0.5:7000", "dns:///localhost:7001", "dns:///no-such-host.invalid:7002", "10.0.0.5:7000"]
    targets = asyncio.run(resolve_seeds(seeds))
    assert targets == [
        JoinTarget("10.0.0.5:7000", None, "10.0.0.5:7000"),
        JoinTarget("127.0.0.1:7001", "localhost", "dns:///localhost:7001"),
    ]
    assert "dns:///no-such-host.invalid:7002 does not resolve" in caplog.text
    assert [r.levelno for r in caplog.records if "does not resolve" in r.getMessage()] == [logging.WARNING]


def test_the_store_keeps_the_view_and_lets_a_reader_in_beside_the_writer(tmp_path: Path) -> None:
    store = Store(tmp_path / STORE_FILE)
    assert store.load_view() is None
    record = PeerRecord("b" * 64, "bob", "127.0.0.1:5000", "alive", 123, 0, 2, b"card-bytes")
    store.save_view(1000, b"own", [record])
    store.save_view(2000, b"own2", [record, PeerRecord("c" * 64, "carol", "127.0.0.1:5001", "dead", 1, 4, 0, b"c")])
    saved = read_saved_view(tmp_path)  # while the writer's connection is open
    assert saved is not None and saved.saved_at_unix_ms == 2000 and saved.own_card == b"own2"
    assert [(p.name, p.state, p.missed_heartbeats) for p in saved.peers] == [("bob", "alive", 0), ("carol", "dead", 4)]
    store.close()
    again = Store(tmp_path / STORE_FILE)  # reopening migrates nothing and keeps everything
    assert again.load_view() == saved
    again.close()


def test_the_store_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="there is no store at"):
        read_saved_view(tmp_path / "never-ran")
    future = tmp_path / "future"
    future.mkdir()
    with sqlite3.connect(future / STORE_FILE) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this Agora knows"):
        Store(future / STORE_FILE)
