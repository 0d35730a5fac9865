"""A node's view of its peers: their latest cards and whether each is alive, suspect or dead.

Pure bookkeeping, no I/O: membership feeds it contacts, missed heartbeats and cards, and
`tick()` applies the time-based rules:

    alive   --(suspect_after_missed heartbeats missed in a row)-->  suspect
    alive | suspect  --(no contact for dead_after_s)-->  dead
    dead    --(no contact for forget_after_s)-->  forgotten (removed)
    any     --(contact, or a card newer than the one held)-->  alive

A contact is any authenticated call in either direction. A newer card is evidence of life: its
node signed it after we last heard from it. Only alive peers are gossiped, so a dead node's card
is not spread, and a restarted node returns under the same node_id with a newer card.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from node.rpc.agora.v1 import node_pb2, peer_pb2

log = logging.getLogger("agora.peers")


class PeerState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True)
class Timings:
    """The failure detector's thresholds (PeersSection, in seconds)."""

    suspect_after_missed: int
    dead_after_s: float
    forget_after_s: float


@dataclass
class Peer:
    """What this node knows of one peer."""

    card: node_pb2.NodeCard
    state: PeerState
    last_contact: float  # the view's monotonic clock
    missed_heartbeats: int = 0
    load: node_pb2.NodeLoad = field(default_factory=node_pb2.NodeLoad)  # latest seen: card or Ping reply

    @property
    def node_id(self) -> str:
        return self.card.node_id

    @property
    def name(self) -> str:
        return self.card.name


@dataclass(frozen=True)
class Transition:
    """A peer changed state (``new`` is None when it was forgotten)."""

    node_id: str
    name: str
    old: PeerState | None
    new: PeerState | None
    why: str


class AllowList:
    """security.allow: node ids or names; empty admits every holder of a network certificate."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = frozenset(entries)

    def permits(self, node_id: str, *names: str) -> bool:
        return not self.entries or node_id in self.entries or any(n in self.entries for n in names if n)


class PeerView:
    """The peers one node knows, by node_id (never itself)."""

    def __init__(
        self,
        self_id: str,
        timings: Timings,
        allow: AllowList | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.self_id = self_id
        self.timings = timings
        self.allow = allow or AllowList(())
        self.clock = clock
        self.version = 0  # bumped on every change, so a saver knows when to write
        self._peers: dict[str, Peer] = {}
        self.listeners: list[Callable[[Transition], None]] = [_log_transition]

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def peers(self, *states: PeerState) -> list[Peer]:
        """Known peers, in the given states (all when none are given), by name."""
        chosen = [p for p in self._peers.values() if not states or p.state in states]
        return sorted(chosen, key=lambda p: (p.name, p.node_id))

    def public_key_of(self, node_id: str) -> bytes | None:
        peer = self._peers.get(node_id)
        return peer.card.public_key if peer is not None else None

    def counts(self) -> dict[PeerState, int]:
        counts = dict.fromkeys(PeerState, 0)
        for peer in self._peers.values():
            counts[peer.state] += 1
        return counts

    # --- anti-entropy --------------------------------------------------------------------------

    def live_cards(self, own_card: node_pb2.NodeCard) -> list[node_pb2.NodeCard]:
        """The cards this node gossips: its own and every alive peer's (never a dead one's)."""
        return [own_card, *(p.card for p in self._peers.values() if p.state is PeerState.ALIVE)]

    def digests(self, own_card: node_pb2.NodeCard) -> list[peer_pb2.CardDigest]:
        """(node_id, issued_at) of every card we gossip."""
        return [
            peer_pb2.CardDigest(node_id=c.node_id, issued_at_unix_ms=c.issued_at_unix_ms)
            for c in self.live_cards(own_card)
        ]

    def newer_than(
        self, digests: Iterable[peer_pb2.CardDigest], own_card: node_pb2.NodeCard
    ) -> list[node_pb2.NodeCard]:
        """Cards we hold (alive peers' and our own) that the digests lack or hold in an older version."""
        theirs = {d.node_id: d.issued_at_unix_ms for d in digests}
        return [c for c in self.live_cards(own_card) if theirs.get(c.node_id, -1) < c.issued_at_unix_ms]

    def wanted(self, digests: Iterable[peer_pb2.CardDigest]) -> list[str]:
        """node_ids in the digests whose card we lack or hold in an older version."""
        wanted = []
        for digest in digests:
            if digest.node_id == self.self_id:
                continue
            known = self._peers.get(digest.node_id)
            if known is None or known.card.issued_at_unix_ms < digest.issued_at_unix_ms:
                wanted.append(digest.node_id)
        return wanted

    # --- events --------------------------------------------------------------------------------

    def learn(self, card: node_pb2.NodeCard, direct: bool = False) -> bool:
        """Take a validated card; True when it was new or newer than the one held.

        ``direct``: the card came from its own node in an authenticated call (a contact).
        """
        if card.node_id == self.self_id or not self.allow.permits(card.node_id, card.name):
            return False
        known = self._peers.get(card.node_id)
        now = self.clock()
        if known is None:
            self._peers[card.node_id] = Peer(card=card, state=PeerState.ALIVE, last_contact=now, load=card.load)
            self._changed(Transition(card.node_id, card.name, None, PeerState.ALIVE, "joined" if direct else "learned"))
            return True
        if card.issued_at_unix_ms <= known.card.issued_at_unix_ms:
            if direct:
                self.contact(card.node_id)
            return False
        known.card, known.load = card, card.load
        self.version += 1
        self._set_state(known, PeerState.ALIVE, "rejoined with a new card", now)
        return True

    def contact(self, node_id: str, load: node_pb2.NodeLoad | None = None) -> None:
        """An authenticated exchange with the peer just succeeded."""
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.missed_heartbeats = 0
        if load is not None:
            peer.load = load
        self._set_state(peer, PeerState.ALIVE, "answered again", self.clock())

    def missed(self, node_id: str, why: str) -> None:
        """A heartbeat to the peer failed."""
        peer = self._peers.get(node_id)
        if peer is None or peer.state is PeerState.DEAD:
            return
        peer.missed_heartbeats += 1
        if peer.state is PeerState.ALIVE and peer.missed_heartbeats >= self.timings.suspect_after_missed:
            self._set_state(peer, PeerState.SUSPECT, f"{peer.missed_heartbeats} heartbeats missed ({why})")

    def tick(self) -> None:
        """Apply the time-based rules: dead after dead_after_s, forgotten after forget_after_s."""
        now = self.clock()
        for peer in list(self._peers.values()):
            silent = now - peer.last_contact
            if peer.state is PeerState.DEAD and silent > self.timings.forget_after_s:
                del self._peers[peer.node_id]
                self._changed(Transition(peer.node_id, peer.name, PeerState.DEAD, None, f"silent {silent:.1f}s"))
            elif peer.state is not PeerState.DEAD and silent > self.timings.dead_after_s:
                self._set_state(peer, PeerState.DEAD, f"no contact for {silent:.1f}s")

    def _set_state(self, peer: Peer, state: PeerState, why: str, contact_at: float | None = None) -> None:
        if contact_at is not None:
            peer.last_contact = contact_at
        if peer.state is not state:
            old, peer.state = peer.state, state
            self._changed(Transition(peer.node_id, peer.name, old, state, why))

    def _changed(self, transition: Transition) -> None:
        self.version += 1
        for listener in self.listeners:
            listener(transition)


def _log_transition(t: Transition) -> None:
    who = f"peer {t.name} ({t.node_id[:12]}…)"
    if t.new is None:
        text, level = f"{who} forgotten ({t.why})", logging.INFO
    elif t.old is None:  # a peer that said Hello is news; one learned second-hand is routine
        text, level = f"{who} {t.why}: {t.new}", logging.INFO if t.why == "joined" else logging.DEBUG
    else:
        text, level = f"{who} is {t.new}: {t.why}", logging.WARNING if t.new is not PeerState.ALIVE else logging.INFO
    log.log(
        level,
        text,
        extra={"event": "peer_state", "peer": t.name, "peer_id": t.node_id, "state": t.new or "forgotten"},
    )
