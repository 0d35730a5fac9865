"""The privacy ledger: every DP release a teacher makes, durable in SQLite, with its running total.

A release is charged *before* its mechanism touches private data: `charge` composes the new
event with everything already spent (node total and, when configured, the recipient's own
total) and either appends it or raises `BudgetExhausted`, all under one lock and one SQLite
write transaction, so concurrent requests can never overspend and a crash never loses a
granted charge. Once the lesson is built, `settle` records its id and what became of it
(released, blocked by the leakage guard, failed). A blocked or failed release stays charged:
the mechanism ran on private data either way.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.privacy.accounting import Accountant, Charge, epsilon_of
from node.store import Store, StoreError, read_rows

STATUSES = ("charged", "released", "blocked", "failed")
_COLUMNS = "seq, at_unix_ms, mechanism, parameters, epsilon, delta, recipient, lesson_id, status, epsilon_spent_after"


class BudgetExhausted(Exception):
    """A release that would take the node (or one recipient) past its epsilon budget."""

    def __init__(self, scope: str, spent: float, would_be: float, budget: float) -> None:
        self.scope, self.spent, self.would_be, self.budget = scope, spent, would_be, budget
        owner = "this node's" if scope == "node" else "your per-recipient"
        super().__init__(
            f"{owner} privacy budget is exhausted: epsilon spent {spent:.4g} of {budget:.4g}, "
            f"and this release would make it {would_be:.4g}"
        )


@dataclass(frozen=True)
class LedgerEvent:
    """One row of the ledger."""

    seq: int
    at_unix_ms: int
    charge: Charge
    epsilon: float  # the event's own epsilon at the node's delta
    delta: float
    recipient: str  # node_id of the student it was released to ("" for the teacher's own training)
    lesson_id: str
    status: str
    epsilon_spent_after: float  # node total, composed, right after this event


def _event(row: tuple[object, ...]) -> LedgerEvent:
    seq, at_ms, mechanism, parameters, epsilon, delta, recipient, lesson_id, status, after = row
    return LedgerEvent(
        int(str(seq)),
        int(str(at_ms)),
        Charge.from_json(str(mechanism), str(parameters)),
        float(str(epsilon)),
        float(str(delta)),
        str(recipient),
        str(lesson_id),
        str(status),
        float(str(after)),
    )


class PrivacyLedger:
    """The durable (epsilon, delta) account of one teacher."""

    def __init__(
        self,
        store: Store,
        epsilon_budget: float,
        delta: float,
        per_recipient_epsilon: float | None = None,
        on_change: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.budget, self.delta, self.per_recipient_budget = epsilon_budget, delta, per_recipient_epsilon
        self.on_change = on_change  # told the new total after every charge (metrics, node card)
        self._lock = threading.Lock()
        self._total = Accountant()
        self._by_recipient: dict[str, Accountant] = {}
        self._last_seq = 0
        self._catch_up()  # a restarted node composes exactly what it had granted

    @property
    def spent(self) -> float:
        self._catch_up()
        return self._total.epsilon(self.delta)

    @property
    def left(self) -> float:
        return max(self.budget - self.spent, 0.0)

    def spent_by(self, recipient: str) -> float:
        accountant = self._by_recipient.get(recipient)
        return accountant.epsilon(self.delta) if accountant else 0.0

    def _compose(self, event: LedgerEvent) -> None:
        self._total.compose(event.charge)
        self._by_recipient.setdefault(event.recipient, Accountant()).compose(event.charge)
        self._last_seq = max(self._last_seq, event.seq)

    def _catch_up(self, db: sqlite3.Connection | None = None) -> None:
        """Compose events other processes appended (`agora teacher dp-train` beside a running node)."""
        query, parameters = f"SELECT {_COLUMNS} FROM privacy_events WHERE seq > ? ORDER BY seq", (self._last_seq,)
        rows = db.execute(query, parameters).fetchall() if db is not None else self.store.rows(query, parameters)
        for row in rows:
            self._compose(_event(row))

    def charge(self, charge: Charge, recipient: str, lesson_id: str = "") -> LedgerEvent:
        """Append a charge if it fits every budget it falls under; BudgetExhausted otherwise.

        The check and the append are one write transaction, so neither threads nor other
        processes sharing the store can overspend."""
        own_epsilon = epsilon_of(charge, self.delta)
        at_ms = int(time.time() * 1000)
        with self._lock, self.store.transaction() as db:
            self._catch_up(db)
            total = self._total.with_charge(charge)
            after = total.epsilon(self.delta)
            if not after <= self.budget:  # also refuses inf and nan
                raise BudgetExhausted("node", self._total.epsilon(self.delta), after, self.budget)
            if self.per_recipient_budget is not None and recipient:
                mine = self._by_recipient.get(recipient, Accountant()).with_charge(charge)
                would_be = mine.epsilon(self.delta)
                if not would_be <= self.per_recipient_budget:
                    raise BudgetExhausted("recipient", self.spent_by(recipient), would_be, self.per_recipient_budget)
            row = (at_ms, charge.mechanism, charge.to_json(), own_epsilon, self.delta, recipient, lesson_id, after)
            cursor = db.execute(
                "INSERT INTO privacy_events (at_unix_ms, mechanism, parameters, epsilon, delta, recipient, "
                "lesson_id, status, epsilon_spent_after) VALUES (?, ?, ?, ?, ?, ?, ?, 'charged', ?)",
                row,
            )
            event = LedgerEvent(
                int(cursor.lastrowid or 0),
                at_ms,
                charge,
                own_epsilon,
                self.delta,
                recipient,
                lesson_id,
                "charged",
                after,
            )
            self._compose(event)
        if self.on_change is not None:
            self.on_change(after)
        return event

    def settle(self, seq: int, status: str, lesson_id: str = "") -> None:
        """Record what became of a charged release."""
        if status not in STATUSES:
            raise ValueError(f"unknown ledger status {status!r}")
        with self.store.transaction() as db:
            db.execute("UPDATE privacy_events SET status = ?, lesson_id = ? WHERE seq = ?", (status, lesson_id, seq))

    def events(self) -> list[LedgerEvent]:
        return [_event(row) for row in self.store.rows(f"SELECT {_COLUMNS} FROM privacy_events ORDER BY seq")]


@dataclass(frozen=True)
class LedgerSummary:
    """What `agora privacy` prints: every event, the composed total and what is left."""

    events: list[LedgerEvent]
    spent: float
    budget: float
    delta: float

    @property
    def left(self) -> float:
        return max(self.budget - self.spent, 0.0)


def read_ledger(data_dir: Path, epsilon_budget: float, delta: float) -> LedgerSummary:
    """The ledger in data_dir's store, read-only; an empty summary when the node never charged.

    StoreError when there is no store or it cannot be read."""
    try:
        rows = read_rows(data_dir, f"SELECT {_COLUMNS} FROM privacy_events ORDER BY seq")
    except StoreError as exc:
        if "no such table" in str(exc):  # a store from before the ledger existed
            rows = []
        else:
            raise
    events = [_event(row) for row in rows]
    total = Accountant()
    for event in events:
        total.compose(event.charge)
    spent = total.epsilon(delta)
    return LedgerSummary(events, spent if math.isfinite(spent) else math.inf, epsilon_budget, delta)
