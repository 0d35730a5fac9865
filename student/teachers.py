"""Which teacher to ask, and asking it: the student's only way to its teachers is the gRPC client.

Teachers of the student's task come from the peer view (cards that teach it, not dead), best
first by the past usefulness of their lessons, then by load. A call that fails for the teacher's
sake (gone, overloaded, too slow, out of budget) benches that teacher for a while and moves to
the next one, and the log says so; with nobody left the student backs off and tries again, up to
`student.teacher_wait_s`. A lesson the leakage guard blocked is no lesson (None), not a failure.
Every lesson is verified (signature, id, addressee, task) and recorded before it is used.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from node.client import PeerCallError, PeerClient
from node.config import Settings
from node.lessons import LessonError, check_lesson, kind_of
from node.metrics import NodeMetrics
from node.peers.view import Peer, PeerState, PeerView
from node.rpc.agora.v1 import lesson_pb2, node_pb2, teacher_pb2
from student.provenance import Provenance, request_key

log = logging.getLogger("agora.student")

Reply = TypeVar("Reply", bound=Message)
SERVICE = "/agora.v1.Teacher/"
BENCH_S = (5.0, 60.0)  # a failed teacher sits out 5 s, doubling per failure in a row, up to 60 s
BACKOFF_S = (0.5, 8.0)  # waits between rounds when no teacher can be asked
USEFULNESS_PRIOR = 0.5
USEFULNESS_RATE = 0.2  # exponential moving average of credit: recent lessons count most

# What a failed call says about the teacher. Anything else (INVALID_ARGUMENT …) is our request's fault.
_TEACHER_FAULTS = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "exhausted",
    grpc.StatusCode.NOT_FOUND: "gone",
    grpc.StatusCode.UNIMPLEMENTED: "not_teaching",
    grpc.StatusCode.INTERNAL: "internal",
    grpc.StatusCode.UNKNOWN: "internal",
    grpc.StatusCode.CANCELLED: "unavailable",
    grpc.StatusCode.UNAUTHENTICATED: "refused",
    grpc.StatusCode.PERMISSION_DENIED: "refused",
    grpc.StatusCode.ABORTED: "unavailable",
}


class NoTeacher(RuntimeError):
    """No teacher of the task answered within `student.teacher_wait_s`."""


class LessonRequestError(RuntimeError):
    """A teacher refused the request itself (INVALID_ARGUMENT …): asking another would not help."""


@dataclass(frozen=True)
class Received:
    """A verified lesson, and whether it came from the provenance table rather than the network."""

    lesson: lesson_pb2.Lesson
    replayed: bool = False

    @property
    def lesson_id(self) -> str:
        return self.lesson.lesson_id

    @property
    def teacher(self) -> str:
        return self.lesson.teacher_node_id


@dataclass
class _Record:
    usefulness: float = USEFULNESS_PRIOR
    failures_in_a_row: int = 0
    benched_until: float = 0.0
    lessons: int = 0


@dataclass
class PoolStats:
    asked: int = 0
    replayed: int = 0
    blocked: int = 0
    failovers: int = 0
    by_teacher: dict[str, int] = field(default_factory=dict)


class TeacherPool:
    """The teachers of one task, as this student sees and rates them."""

    def __init__(
        self,
        settings: Settings,
        own_node_id: str,
        client: PeerClient,
        view: PeerView,
        provenance: Provenance,
        metrics: NodeMetrics,
    ) -> None:
        self.task = settings.student.task
        self.timeout_s = settings.student.lesson_timeout_s
        self.wait_s = settings.student.teacher_wait_s
        self.own_node_id = own_node_id
        self.client, self.view, self.provenance, self.metrics = client, view, provenance, metrics
        self.stats = PoolStats()
        self._records: dict[str, _Record] = {}
        self._handed: set[str] = set()  # lessons given to the learner in this run and not applied yet

    # --- choosing ------------------------------------------------------------------------------

    def _record(self, node_id: str) -> _Record:
        return self._records.setdefault(node_id, _Record())

    def teachers(self) -> list[Peer]:
        """Teachers of the task that are not dead and not benched, best first."""
        now = asyncio.get_running_loop().time()
        found = [
            peer
            for peer in self.view.peers(PeerState.ALIVE, PeerState.SUSPECT)
            if node_pb2.ROLE_TEACHER in peer.card.roles and self.task in peer.card.teaches
        ]
        ready = [p for p in found if self._record(p.node_id).benched_until <= now]
        return sorted(
            ready,
            key=lambda p: (
                p.state is not PeerState.ALIVE,
                -self._record(p.node_id).usefulness,
                p.load.in_flight_rpcs,
                p.name,
            ),
        )

    def credit(self, teacher: str, useful: bool) -> None:
        """Tell the pool whether a teacher's lesson helped (e.g. its critique led to a correct answer)."""
        record = self._record(teacher)
        record.usefulness += USEFULNESS_RATE * (float(useful) - record.usefulness)

    def hold(self, lesson_ids: set[str]) -> None:
        """Lessons a resumed learner already holds in its queue: not to be handed out again."""
        self._handed |= lesson_ids

    def released(self, lesson_ids: set[str]) -> None:
        """Lessons an update has applied: the provenance table owns them now."""
        self._handed -= lesson_ids

    def name_of(self, node_id: str) -> str:
        peer = self.view.get(node_id)
        return peer.name if peer else node_id[:12]

    # --- asking --------------------------------------------------------------------------------

    async def lesson(self, method: str, request: Message, teacher: str | None = None) -> Received | None:
        """One verified lesson for the request: replayed from the provenance table if a lost update
        had received it, else from the best teacher (or the given one, without failover).

        None when the leakage guard blocked it (or the given teacher could not answer).
        NoTeacher when nobody answered in time; LessonRequestError when the request was refused.
        """
        key = request_key(method, request)
        for stored in self.provenance.stored(key):
            if stored.lesson_id not in self._handed and (teacher is None or stored.teacher_node_id == teacher):
                self._handed.add(stored.lesson_id)
                self.stats.replayed += 1
                return Received(stored, replayed=True)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.wait_s
        backoff = BACKOFF_S[0]
        while True:
            candidates = self.teachers()
            if teacher is not None:
                candidates = [p for p in candidates if p.node_id == teacher]
            for peer in candidates:
                outcome = await self._ask(peer, method, request, key)
                if not isinstance(outcome, str):
                    return outcome
                if teacher is not None:
                    return None
                if outcome == "blocked":
                    return None
                after = [p.name for p in self.teachers() if p.node_id != peer.node_id]
                self.stats.failovers += 1
                self.metrics.teacher_failovers.labels(reason=outcome).inc()
                log.warning(
                    "teacher %s failed %s (%s); %s",
                    peer.name,
                    method,
                    outcome,
                    f"failing over to {after[0]}" if after else "no other teacher left, backing off",
                    extra={"event": "teacher_failover", "teacher": peer.node_id, "reason": outcome, "method": method},
                )
            if teacher is not None:
                return None
            if loop.time() + backoff > give_up_at:
                raise NoTeacher(
                    f"no teacher of {self.task!r} answered {method} within {self.wait_s:.0f}s "
                    f"(teachers known: {self._known_summary()})"
                )
            log.info("no teacher of %s can be asked now; retrying in %.1fs", self.task, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def pick(self) -> Peer:
        """The best teacher of the task to ask now, backing off while there is none (NoTeacher after teacher_wait_s)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.wait_s
        backoff = BACKOFF_S[0]
        while not (candidates := self.teachers()):
            if loop.time() + backoff > give_up_at:
                raise NoTeacher(
                    f"no teacher of {self.task!r} could be asked within {self.wait_s:.0f}s "
                    f"(teachers known: {self._known_summary()})"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])
        return candidates[0]

    async def score(self, teacher: str, request: teacher_pb2.ScoreRequest) -> list[float] | None:
        """A given teacher's scores for the items, or None if it could not answer."""
        peer = self.view.get(teacher)
        if peer is None:
            return None
        try:
            reply = await self.client.call(
                teacher, SERVICE + "Score", request, teacher_pb2.ScoreReply, timeout_s=self.timeout_s
            )
        except PeerCallError as error:
            log.warning("teacher %s could not score (%s: %s)", peer.name, error.code.name, error.details)
            return None
        if len(reply.scores) != len(request.items):
            log.warning("teacher %s returned %d scores for %d items", peer.name, len(reply.scores), len(request.items))
            return None
        return list(reply.scores)

    async def _ask(self, peer: Peer, method: str, request: Message, key: str) -> Received | str:
        """The lesson, or why not: "blocked" or a teacher-fault reason."""
        self.stats.asked += 1
        record = self._record(peer.node_id)
        try:
            reply = await self.client.call(
                peer.node_id, SERVICE + method, request, teacher_pb2.LessonReply, timeout_s=self.timeout_s
            )
        except PeerCallError as error:
            if error.code is grpc.StatusCode.FAILED_PRECONDITION:
                self.stats.blocked += 1
                log.info("teacher %s did not give the %s lesson: %s", peer.name, method, error.details)
                return "blocked"
            reason = _TEACHER_FAULTS.get(error.code)
            if reason is None:
                raise LessonRequestError(
                    f"{method} refused by {peer.name}: {error.code.name}: {error.details}"
                ) from None
            self._bench(record, f"{error.code.name}: {error.details}", peer.name)
            return reason
        try:
            self._check(reply.lesson, peer, request)
        except LessonError as exc:
            self._bench(record, f"bad lesson: {exc}", peer.name)
            return "bad_lesson"
        record.failures_in_a_row, record.lessons = 0, record.lessons + 1
        self.provenance.receive(key, reply.lesson)
        self._handed.add(reply.lesson.lesson_id)
        self.metrics.lessons_received.labels(kind=kind_of(reply.lesson), task=reply.lesson.task).inc()
        self.stats.by_teacher[peer.name] = self.stats.by_teacher.get(peer.name, 0) + 1
        return Received(reply.lesson)

    def _check(self, lesson: lesson_pb2.Lesson, peer: Peer, request: Message) -> None:
        check_lesson(lesson, peer.card.public_key)
        if lesson.teacher_node_id != peer.node_id:
            raise LessonError("the lesson names another teacher than the one asked")
        if lesson.recipient_node_id and lesson.recipient_node_id != self.own_node_id:
            raise LessonError("the lesson is addressed to another student")
        if lesson.task != getattr(request, "task", lesson.task):
            raise LessonError(f"the lesson is for task {lesson.task!r}, not the one asked")

    def _bench(self, record: _Record, why: str, name: str) -> None:
        record.failures_in_a_row += 1
        pause = min(BENCH_S[0] * 2 ** (record.failures_in_a_row - 1), BENCH_S[1])
        record.benched_until = asyncio.get_running_loop().time() + pause
        log.info("teacher %s benched for %.0fs: %s", name, pause, why)

    def _known_summary(self) -> str:
        teaching = [p for p in self.view.peers() if self.task in p.card.teaches]
        return ", ".join(f"{p.name} ({p.state})" for p in teaching) or "none"
