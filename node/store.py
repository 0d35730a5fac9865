"""The node's SQLite store (WAL) in ``<data_dir>/agora.db``.

It holds the peer view (so that `agora peers` can show a running node's view and a restarted
node knows whom to rejoin through), a teacher's privacy ledger and the lessons it sent. Schema
changes are numbered migrations applied in order (``PRAGMA user_version``). Cards and lessons
are kept as the protobuf bytes their nodes signed, so they can be verified again after loading;
nothing is pickled.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

STORE_FILE = "agora.db"

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE peers (
        node_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        last_contact_unix_ms INTEGER NOT NULL,
        missed_heartbeats INTEGER NOT NULL,
        in_flight_rpcs INTEGER NOT NULL,
        card BLOB NOT NULL
    );
    """,
    # 2: the teacher's privacy ledger (append-only DP events) and every lesson it sent.
    """
    CREATE TABLE privacy_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_unix_ms INTEGER NOT NULL,
        mechanism TEXT NOT NULL,
        parameters TEXT NOT NULL,
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        recipient TEXT NOT NULL,
        lesson_id TEXT NOT NULL,
        status TEXT NOT NULL,
        epsilon_spent_after REAL NOT NULL
    );
    CREATE TABLE lessons (
        lesson_id TEXT PRIMARY KEY,
        at_unix_ms INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        task TEXT NOT NULL,
        kind TEXT NOT NULL,
        lesson BLOB NOT NULL
    );
    """,
    # 3: the student's provenance: every lesson it received (keyed by the request that asked for
    # it, so a replay after a crash reuses it) and the update that first trained on it, or, with
    # outcome "discarded", the update whose data collection set it aside.
    """
    CREATE TABLE received_lessons (
        lesson_id TEXT PRIMARY KEY,
        request_key TEXT NOT NULL,
        at_unix_ms INTEGER NOT NULL,
        teacher TEXT NOT NULL,
        task TEXT NOT NULL,
        kind TEXT NOT NULL,
        lesson BLOB NOT NULL,
        applied_step INTEGER,
        outcome TEXT
    );
    CREATE INDEX received_lessons_by_request ON received_lessons (request_key);
    CREATE TABLE updates (
        step INTEGER PRIMARY KEY,
        at_unix_ms INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        loss REAL,
        examples INTEGER NOT NULL,
        lessons INTEGER NOT NULL
    );
    """,
)


class StoreError(RuntimeError):
    """The store file cannot be opened or read; the message names it."""


@dataclass(frozen=True)
class PeerRecord:
    """One row of the saved peer view."""

    node_id: str
    name: str
    address: str
    state: str
    last_contact_unix_ms: int
    missed_heartbeats: int
    in_flight_rpcs: int
    card: bytes  # the serialized, signed NodeCard


@dataclass(frozen=True)
class SavedView:
    """The peer view as a node last saved it, with its own card."""

    saved_at_unix_ms: int
    own_card: bytes
    peers: list[PeerRecord]


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    try:
        if read_only:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; a crash loses no committed WAL
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    return connection


class Store:
    """One node's store. Safe to call from the event loop's worker threads (one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = _connect(path, read_only=False)
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Agora knows ({len(MIGRATIONS)})"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")

    def save_view(self, saved_at_unix_ms: int, own_card: bytes, peers: Iterable[PeerRecord]) -> None:
        """Replace the saved view in one transaction."""
        rows = [astuple(p) for p in peers]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM peers")
                self._db.executemany("INSERT INTO peers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("view_saved_at_unix_ms", str(saved_at_unix_ms)), ("own_card", own_card.hex())],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def load_view(self) -> SavedView | None:
        with self._lock:
            return _read_view(self._db)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue, readers carry on); rolled back
        if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, parameters).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _read_view(db: sqlite3.Connection) -> SavedView | None:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if "view_saved_at_unix_ms" not in meta:
        return None
    rows = db.execute("SELECT * FROM peers ORDER BY name, node_id").fetchall()
    return SavedView(
        saved_at_unix_ms=int(meta["view_saved_at_unix_ms"]),
        own_card=bytes.fromhex(meta.get("own_card", "")),
        peers=[PeerRecord(*row) for row in rows],
    )


def read_saved_view(data_dir: Path) -> SavedView | None:
    """The view saved in data_dir's store, read-only (a running node keeps writing it); None when
    the node never saved one. StoreError when there is no store or it cannot be read."""
    path = data_dir / STORE_FILE
    if not path.exists():
        raise StoreError(f"there is no store at {path}: has a node run with node.data_dir = {data_dir}?")
    db = _connect(path, read_only=True)
    try:
        return _read_view(db)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        db.close()


def saved_peer_states(data_dir: Path) -> dict[str, str]:
    """Peer name -> state in the view saved in data_dir; {} while there is none yet (a node
    starting up). For watching a node from outside its process."""
    try:
        view = read_saved_view(data_dir)
    except StoreError:
        return {}
    return {peer.name: peer.state for peer in view.peers} if view is not None else {}


def read_rows(data_dir: Path, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on data_dir's store, opened read-only (a running node may be writing it)."""
    path = data_dir / STORE_FILE
    if not path.exists():
        raise StoreError(f"there is no store at {path}: has a node run with node.data_dir = {data_dir}?")
    db = _connect(path, read_only=True)
    try:
        return list(db.execute(sql, parameters).fetchall())
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        db.close()
