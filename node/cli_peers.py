"""`agora peers --config node.yaml`: the node's current view of its peers.

A running node saves its view to ``<data_dir>/agora.db`` whenever it changes (at most once a
heartbeat), so this reads that file: it works while the node runs (SQLite WAL lets a reader in
beside the writer) and after it stopped, and says how old the view is.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from node.cli_errors import EXIT_OK, UsageError, table_lines
from node.config import Settings
from node.rpc.agora.v1 import node_pb2
from node.store import PeerRecord, SavedView, StoreError, read_saved_view

ROLE_NAMES = {node_pb2.ROLE_TEACHER: "teacher", node_pb2.ROLE_STUDENT: "student"}


def add_command(commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    peers = commands.add_parser(
        "peers",
        help="print a node's view of its peers (state, address, roles, load, budget)",
        description="Print the peer view the node with this config saved last: every peer it knows, "
        "whether it is alive, suspect or dead, when it was last heard from, and what its card says. "
        "Reads <node.data_dir>/agora.db, which a running node updates at each heartbeat.",
        epilog="example: agora peers --config node.yaml --format json",
    )
    config_arguments(peers)
    peers.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")


def _ago(unix_ms: int, now_ms: int) -> str:
    seconds = max(now_ms - unix_ms, 0) / 1000
    if seconds < 90:
        return f"{seconds:.1f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 5400 else f"{seconds / 3600:.1f}h ago"


def _card_fields(card: node_pb2.NodeCard) -> dict[str, Any]:
    return {
        "name": card.name,
        "node_id": card.node_id,
        "address": card.address,
        "roles": [ROLE_NAMES.get(role, str(role)) for role in card.roles],
        "teaches": list(card.teaches),
        "learns": list(card.learns),
        "model": card.model.id,
        "epsilon_left": card.epsilon_left,
        "software_version": card.software_version,
        "issued_at_unix_ms": card.issued_at_unix_ms,
    }


def _peer_fields(record: PeerRecord) -> dict[str, Any]:
    return {
        **_card_fields(node_pb2.NodeCard.FromString(record.card)),
        "state": record.state,
        "last_contact_unix_ms": record.last_contact_unix_ms,
        "missed_heartbeats": record.missed_heartbeats,
        "in_flight_rpcs": record.in_flight_rpcs,
    }


def render_table(view: SavedView, settings: Settings, now_ms: int) -> str:
    own = _card_fields(node_pb2.NodeCard.FromString(view.own_card))
    peers = [_peer_fields(record) for record in view.peers]
    counts = {state: sum(p["state"] == state for p in peers) for state in ("alive", "suspect", "dead")}
    age_s = (now_ms - view.saved_at_unix_ms) / 1000
    stale = max(5.0, 3 * settings.peers.ping_interval_s)
    head = (
        f"{own['name']} ({own['node_id'][:12]}…) at {own['address']}: "
        + ", ".join(f"{n} {state}" for state, n in counts.items())
        + f"; view saved {_ago(view.saved_at_unix_ms, now_ms)}"
        + (" (the node is probably not running)" if age_s > stale else "")
    )
    columns = ["NAME", "NODE ID", "ADDRESS", "STATE", "LAST CONTACT", "MISSED", "ROLES", "TEACHES", "LEARNS",
               "MODEL", "LOAD", "EPSILON LEFT"]  # fmt: skip
    rows = [
        [
            p["name"],
            p["node_id"][:12],
            p["address"],
            p["state"],
            _ago(p["last_contact_unix_ms"], now_ms),
            str(p["missed_heartbeats"]),
            ",".join(p["roles"]),
            ",".join(p["teaches"]) or "-",
            ",".join(p["learns"]) or "-",
            p["model"] or "-",
            str(p["in_flight_rpcs"]),
            f"{p['epsilon_left']:g}" if "teacher" in p["roles"] else "-",
        ]
        for p in peers
    ]
    if not rows:
        return head + "\n(no peers known)"
    lines = table_lines(columns, rows)
    return "\n".join([head, *lines])


def run(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = settings.node.data_dir
    try:
        view = read_saved_view(data_dir)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if view is None:
        raise UsageError(f"the node in {data_dir} has not saved a peer view yet; is it starting?")
    now_ms = time.time_ns() // 1_000_000
    if args.format == "json":
        document = {
            "node": _card_fields(node_pb2.NodeCard.FromString(view.own_card)),
            "saved_at_unix_ms": view.saved_at_unix_ms,
            "peers": [_peer_fields(record) for record in view.peers],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render_table(view, settings, now_ms))
    return EXIT_OK
