"""The student's provenance: every lesson it received, and the update that first trained on it.

A lesson is stored the moment it arrives (before any use), keyed by the request that asked for
it. An update marks the lessons it applied, in the same transaction that logs the update, and a
lesson can be marked once only. A checkpoint records its step; after a crash the student resumes
from it and `rewind` forgets what later updates applied (their weights were lost with the
crash). The re-run of those steps sends the same requests (the same weights and seeds give the
same attempts), finds their lessons here and applies them again, without asking the teacher
twice: no lesson is applied twice in the model's lineage, and none is lost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Set
from dataclasses import dataclass

from google.protobuf.message import Message

from node.lessons import kind_of
from node.rpc.agora.v1 import lesson_pb2
from node.store import Store


class LessonReused(RuntimeError):
    """An update tried to apply a lesson that an earlier update of this lineage already applied."""


def request_key(method: str, request: Message) -> str:
    """What identifies a request whatever its envelope: the method and the request's other fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("envelope")  # every Agora request has one
    return hashlib.sha256(method.encode() + b"\n" + copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class ProvenanceSummary:
    received: int
    applied: int
    discarded: int
    updates: int

    @property
    def unused(self) -> int:
        return self.received - self.applied - self.discarded


class Provenance:
    """The `received_lessons` and `updates` tables of a student's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def stored(self, key: str) -> list[lesson_pb2.Lesson]:
        """Lessons received for this request and not applied by any update of the lineage yet."""
        rows = self.store.rows(
            "SELECT lesson FROM received_lessons WHERE request_key = ? AND applied_step IS NULL ORDER BY at_unix_ms",
            (key,),
        )
        return [lesson_pb2.Lesson.FromString(row[0]) for row in rows]

    def receive(self, key: str, lesson: lesson_pb2.Lesson) -> None:
        """Record a verified lesson as it arrives (a lesson already recorded is left as it is)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO received_lessons VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    lesson.lesson_id,
                    key,
                    int(time.time() * 1000),
                    lesson.teacher_node_id,
                    lesson.task,
                    kind_of(lesson),
                    lesson.SerializeToString(deterministic=True),
                ),
            )

    def record_update(
        self,
        step: int,
        algorithm: str,
        loss: float | None,
        examples: int,
        applied: Set[str],
        discarded: Set[str] = frozenset(),
    ) -> None:
        """Log update `step`, mark the lessons it applied first and those its data collection set
        aside (a TriPosT trajectory that never became correct …), atomically.

        LessonReused if a lesson was marked already, or was never received: then nothing is written.
        """
        with self.store.transaction() as db:
            for outcome, lesson_ids in (("applied", applied), ("discarded", discarded)):
                for lesson_id in sorted(lesson_ids):
                    marked = db.execute(
                        "UPDATE received_lessons SET applied_step = ?, outcome = ? "
                        "WHERE lesson_id = ? AND applied_step IS NULL",
                        (step, outcome, lesson_id),
                    ).rowcount
                    if marked != 1:
                        raise LessonReused(f"lesson {lesson_id[:12]} is already used, or was never received")
            db.execute(
                "INSERT OR REPLACE INTO updates VALUES (?, ?, ?, ?, ?, ?)",
                (step, int(time.time() * 1000), algorithm, loss, examples, len(applied)),
            )

    def rewind(self, step: int) -> int:
        """Forget updates after `step` (the checkpoint resumed from); returns how many lessons they had applied."""
        with self.store.transaction() as db:
            released = db.execute(
                "UPDATE received_lessons SET applied_step = NULL, outcome = NULL WHERE applied_step > ?", (step,)
            ).rowcount
            db.execute("DELETE FROM updates WHERE step > ?", (step,))
        return int(released)

    def applied_by(self, step: int) -> list[str]:
        rows = self.store.rows(
            "SELECT lesson_id FROM received_lessons WHERE applied_step = ? AND outcome = 'applied' ORDER BY 1", (step,)
        )
        return [row[0] for row in rows]

    def summary(self) -> ProvenanceSummary:
        received, applied, discarded = self.store.rows(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome = 'applied'), "
            "COUNT(*) FILTER (WHERE outcome = 'discarded') FROM received_lessons"
        )[0]
        updates = self.store.rows("SELECT COUNT(*) FROM updates")[0][0]
        return ProvenanceSummary(int(received), int(applied), int(discarded), int(updates))
