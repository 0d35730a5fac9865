"""Membership: join through seeds, gossip cards, ping peers, detect failures, save the view.

Three loops run while the node is up:

- join: say Hello to every seed address (and, if none answers, to peers remembered from the
  last run); again every peers.rejoin_interval_s, or every gossip interval while no peer is
  alive, so a restarted or partitioned node finds its way back.
- gossip: every peers.gossip_interval_s (jittered), push-pull with peers.gossip_fanout random
  live peers: send a digest of the cards we hold, take the newer cards in the reply, and send
  back at once the cards the peer said it wanted. A round thus both pulls and pushes, and a
  network of N nodes converges in about log2(N) rounds.
- heartbeat: every peers.ping_interval_s, Ping each alive or suspect peer (a reply later than
  peers.ping_timeout_s is missed), then apply the view's time rules, export agora_peers{state}
  and save the view to the store when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from node.client import PeerCallError, PeerClient
from node.config import Settings
from node.metrics import NodeMetrics
from node.peers.cards import CardIssuer, validate_card
from node.peers.seeds import JoinTarget, resolve_seeds
from node.peers.view import PeerState, PeerView, Transition
from node.rpc.agora.v1 import node_pb2, peer_pb2
from node.security.envelope import EnvelopeError
from node.store import PeerRecord, Store

log = logging.getLogger("agora.peers")

GOSSIP = "/agora.v1.Peer/Gossip"
PING = "/agora.v1.Peer/Ping"
REMEMBERED_TRIES = 8  # remembered peers tried at once when no seed answers


class Membership:
    """One node's membership: its view of peers and the loops that keep it current."""

    def __init__(
        self,
        settings: Settings,
        view: PeerView,
        client: PeerClient,
        issuer: CardIssuer,
        own_load: Callable[[], node_pb2.NodeLoad],
        metrics: NodeMetrics,
        store: Store | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings.peers
        self.view = view
        self.client = client
        self.issuer = issuer
        self.own_load = own_load
        self.metrics = metrics
        self.store = store
        self.rng = rng or random.Random()
        self.max_skew_ms = int(settings.security.max_clock_skew_s * 1000)
        self.rounds = 0  # gossip rounds run
        self._ping_sequence = 0
        self._remembered: list[JoinTarget] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._saved_version = -1
        self._joined = False
        self._warned_at: dict[str, float] = {}  # join target -> when its failure was last logged
        self._closing: list[node_pb2.NodeCard] = []  # channels to close: peers that just died
        view.listeners.append(self._on_transition)

    def own_card(self) -> node_pb2.NodeCard:
        return self.issuer.current()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore what the last run knew, then start the loops."""
        if self.store is not None:
            await asyncio.to_thread(self._restore)
        self._export_counts()
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [self._gossip_loop, self._heartbeat_loop]
        if self.settings.seeds or self._remembered:
            loops.insert(0, self._join_loop)
        self._tasks = [asyncio.create_task(loop(), name=f"membership-{loop.__name__}") for loop in loops]

    async def stop(self) -> None:
        """Stop the loops, save the view one last time and close the channels."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.save()
        await self.client.close()

    def _restore(self) -> None:
        assert self.store is not None
        saved = self.store.load_view()
        if saved is None:
            return
        if saved.own_card:
            self.issuer.supersede(node_pb2.NodeCard.FromString(saved.own_card).issued_at_unix_ms)
        for record in saved.peers:
            card = node_pb2.NodeCard.FromString(record.card)
            try:
                validate_card(card, self.max_skew_ms)
            except EnvelopeError:
                continue  # a stale or damaged row: not worth a Hello
            self._remembered.append(JoinTarget(card.address, card.name, "remembered"))

    # --- join --------------------------------------------------------------------------------------

    async def join(self) -> int:
        """Say Hello to every seed address; if none answers, to a few remembered peers. Returns how
        many answered."""
        targets = await resolve_seeds(self.settings.seeds)
        answered = sum(await asyncio.gather(*(self._hello(t) for t in targets)))
        if not answered and self._remembered:
            tries = self.rng.sample(self._remembered, min(REMEMBERED_TRIES, len(self._remembered)))
            answered = sum(await asyncio.gather(*(self._hello(t) for t in tries)))
        if answered and not self._joined:
            self._joined = True
            log.info(
                "joined the network: %d peers known",
                len(self.view),
                extra={"event": "joined", "peers": len(self.view)},
            )
        return answered

    async def _hello(self, target: JoinTarget) -> bool:
        try:
            reply = await self.client.hello(
                target.address, target.server_name, timeout_s=self.settings.ping_timeout_s, attempts=1
            )
        except PeerCallError as exc:
            # Until the node has joined, say why each seed fails, but once per rejoin interval, not
            # at every retry; afterwards the next rejoin will tell.
            now = time.monotonic()
            quiet = self._joined or now - self._warned_at.get(target.address, -1e9) < self.settings.rejoin_interval_s
            if not quiet:
                self._warned_at[target.address] = now
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "Hello to %s%s failed: %s: %s",
                target.address,
                "" if target.origin == target.address else f" ({target.origin})",
                exc.code.name,
                exc.details,
            )
            return False
        if reply.card.node_id == self.view.self_id:
            return False  # the seed list names this node itself (a headless service lists every pod)
        self.view.learn(reply.card, direct=True)
        self.merge(reply.peers, source=reply.card.node_id)
        return True

    async def _join_loop(self) -> None:
        while True:
            try:
                await self.join()
            except Exception:
                log.exception("join round failed")
            isolated = not self.view.peers(PeerState.ALIVE, PeerState.SUSPECT)
            await asyncio.sleep(self.settings.gossip_interval_s if isolated else self.settings.rejoin_interval_s)

    # --- gossip ------------------------------------------------------------------------------------

    def merge(self, cards: Iterable[node_pb2.NodeCard], source: str) -> int:
        """Take relayed cards into the view; returns how many were new or newer. A card that fails
        validation is skipped (and counted as bad_card): one bad card must not stop the rest."""
        taken = 0
        for card in cards:
            if card.node_id == self.view.self_id:
                if card.issued_at_unix_ms >= self.own_card().issued_at_unix_ms:
                    self.issuer.supersede(card.issued_at_unix_ms)  # a card of ours from before a restart
                continue
            known = self.view.get(card.node_id)
            if known is not None and known.card.issued_at_unix_ms >= card.issued_at_unix_ms:
                continue  # nothing new: skip the signature check
            try:
                validate_card(card, self.max_skew_ms)
            except EnvelopeError as exc:
                self.metrics.auth_rejections.labels(reason="bad_card").inc()
                log.debug("card relayed by %s… refused: %s", source[:12], exc)
                continue
            taken += self.view.learn(card, direct=card.node_id == source)
        return taken

    async def gossip_round(self) -> None:
        """One push-pull exchange with each of up to peers.gossip_fanout random live peers."""
        self.rounds += 1
        self.metrics.gossip_rounds.inc()
        live = self.view.peers(PeerState.ALIVE, PeerState.SUSPECT)
        chosen = self.rng.sample(live, min(self.settings.gossip_fanout, len(live)))
        await asyncio.gather(*(self._gossip_with(peer.node_id) for peer in chosen))

    async def _gossip_with(self, node_id: str) -> None:
        own = self.own_card()
        request = peer_pb2.GossipRequest(digests=self.view.digests(own))
        try:
            reply = await self._gossip_call(node_id, request)
            self.merge(reply.cards, source=node_id)
            if reply.wanted:
                wanted = set(reply.wanted)
                push = peer_pb2.GossipRequest(
                    digests=self.view.digests(own), cards=[c for c in self.view.live_cards(own) if c.node_id in wanted]
                )
                self.merge((await self._gossip_call(node_id, push)).cards, source=node_id)
        except PeerCallError as exc:
            log.debug("gossip with %s failed: %s", exc.peer, exc)

    async def _gossip_call(self, node_id: str, request: peer_pb2.GossipRequest) -> peer_pb2.GossipReply:
        # One try: the next round picks peers afresh anyway.
        return await self.client.call(
            node_id, GOSSIP, request, peer_pb2.GossipReply, timeout_s=self.settings.ping_timeout_s, attempts=1
        )

    async def _gossip_loop(self) -> None:
        interval = self.settings.gossip_interval_s
        await asyncio.sleep(interval * self.rng.random())  # nodes started together must not gossip in step
        while True:
            started = time.monotonic()
            try:
                await self.gossip_round()
            except Exception:
                log.exception("gossip round failed")
            pause = interval * self.rng.uniform(0.9, 1.1) - (time.monotonic() - started)
            await asyncio.sleep(max(pause, 0.0))

    # --- heartbeats and failure detection ------------------------------------------------------------

    async def heartbeat_round(self) -> None:
        """Ping every alive or suspect peer; then apply the time rules, export counts, save."""
        peers = self.view.peers(PeerState.ALIVE, PeerState.SUSPECT)
        await asyncio.gather(*(self._ping(peer.node_id) for peer in peers))
        self.view.tick()
        closing, self._closing = self._closing, []
        for card in closing:
            await self.client.forget(card)
        self._export_counts()
        await self.save()

    async def _ping(self, node_id: str) -> None:
        self._ping_sequence += 1
        request = peer_pb2.PingRequest(sequence=self._ping_sequence)
        try:
            reply = await self.client.call(
                node_id, PING, request, peer_pb2.PingReply, timeout_s=self.settings.ping_timeout_s, attempts=1
            )
        except PeerCallError as exc:
            self.view.missed(node_id, exc.code.name)
            return
        self.view.contact(node_id, load=reply.load)

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.ping_interval_s
        while True:
            started = time.monotonic()
            try:
                await self.heartbeat_round()
            except Exception:
                log.exception("heartbeat round failed")
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.0))

    def _on_transition(self, transition: Transition) -> None:
        # A forgotten peer was dead first, so its channel is already closed.
        if transition.new is PeerState.DEAD and (peer := self.view.get(transition.node_id)) is not None:
            self._closing.append(peer.card)

    def _export_counts(self) -> None:
        for state, count in self.view.counts().items():
            self.metrics.peers.labels(state=state.value).set(count)

    # --- persistence -------------------------------------------------------------------------------

    async def save(self) -> None:
        """Write the view to the store when it changed since the last save."""
        if self.store is None or self.view.version == self._saved_version:
            return
        version = self.view.version
        now_mono, now_ms = self.view.clock(), time.time_ns() // 1_000_000
        records = [
            PeerRecord(
                node_id=p.node_id,
                name=p.name,
                address=p.card.address,
                state=p.state.value,
                last_contact_unix_ms=now_ms - int((now_mono - p.last_contact) * 1000),
                missed_heartbeats=p.missed_heartbeats,
                in_flight_rpcs=p.load.in_flight_rpcs,
                card=p.card.SerializeToString(deterministic=True),
            )
            for p in self.view.peers()
        ]
        own = self.own_card().SerializeToString(deterministic=True)
        await asyncio.to_thread(self.store.save_view, now_ms, own, records)
        self._saved_version = version
