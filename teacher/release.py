"""How a lesson leaves a teacher: charged, guarded, signed, stored, counted.

A lesson maker charges the ledger (`Release.charge`) before its mechanism touches private data,
then returns a `Draft`. `Release.finish` runs the leakage guard on every text the teacher wrote,
and either blocks the lesson (FAILED_PRECONDITION, counted by reason, the charge kept) or builds
the signed `Lesson` with its PrivacyReport, stores it and counts it as sent. A lesson that is not
DP (Social Learning's private-prompt methods) charges nothing: its Draft names mechanism
"private_prompt_not_dp", and its report claims no epsilon (epsilon_charged 0), guarded all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from node.lessons import kind_of, sign_lesson
from node.metrics import NodeMetrics
from node.privacy.accounting import Charge
from node.privacy.guard import GuardVerdict, LeakageGuard
from node.privacy.ledger import BudgetExhausted, LedgerEvent, PrivacyLedger
from node.rpc.agora.v1 import lesson_pb2, node_pb2
from node.security.identity import NodeIdentity
from node.store import Store

log = logging.getLogger("agora.teacher")


class RequestError(Exception):
    """A request the teacher refuses: answered with `code` and the sentence."""

    def __init__(self, code: grpc.StatusCode, sentence: str) -> None:
        super().__init__(sentence)
        self.code, self.sentence = code, sentence


def invalid(sentence: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, sentence)


@dataclass
class Draft:
    """A lesson before the guard: its body, the texts the teacher wrote, and what covers them."""

    task: str
    body: Message  # Instruction, ExampleSet, DemonstrationSet, Feedback or QuestionSet
    texts: Sequence[str]  # what the guard checks (the teacher's own words, with what they continue)
    mechanism: str = "none"
    parameters: dict[str, float] = field(default_factory=dict)
    parents: Sequence[str] = ()
    known: Sequence[str] = ()  # what the student sent: it knows this already, so it leaks nothing


_BODY_FIELDS = {
    lesson_pb2.Instruction: "instruction",
    lesson_pb2.ExampleSet: "examples",
    lesson_pb2.DemonstrationSet: "demonstrations",
    lesson_pb2.Feedback: "feedback",
    lesson_pb2.QuestionSet: "questions",
}


_WORST = {"levenshtein": min}  # the smaller distance is the worse; for every other check the larger count


def check_parts(guard: LeakageGuard, texts: Sequence[str], known: str) -> GuardVerdict:
    """Guard each text on its own, so that no n-gram spans two of them (a feedback sentence and
    the answer after it), and report each check's worst value over the parts."""
    verdicts = [guard.check(text, known) for text in texts if text] or [guard.check("", known)]
    blocked = next((verdict for verdict in verdicts if not verdict.passed), None)
    if blocked is not None:
        return blocked
    worst = []
    for index, check in enumerate(verdicts[0].checks):
        pick = _WORST.get(check.name, max)
        worst.append(pick((verdict.checks[index] for verdict in verdicts), key=lambda c: c.value))
    return GuardVerdict(tuple(worst))


class Release:
    """One request's way out: at most one ledger charge, then the guard and the signature."""

    def __init__(self, teacher: Releaser, recipient: str) -> None:
        self.teacher, self.recipient = teacher, recipient
        self.event: LedgerEvent | None = None

    def charge(self, charge: Charge) -> None:
        """Charge the ledger; RESOURCE_EXHAUSTED when a budget would be exceeded."""
        try:
            self.event = self.teacher.ledger.charge(charge, self.recipient)
        except BudgetExhausted as exc:
            self.teacher.metrics.privacy_refusals.labels(scope=exc.scope).inc()
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None

    def fail(self) -> None:
        """The request failed after its charge: the charge stays, marked failed."""
        if self.event is not None:
            self.teacher.ledger.settle(self.event.seq, "failed")

    async def finish(self, draft: Draft, model: node_pb2.ModelInfo) -> lesson_pb2.Lesson:
        teacher = self.teacher
        verdict = await asyncio.to_thread(check_parts, teacher.guard, draft.texts, "\n".join(draft.known))
        if not verdict.passed:
            blocked_by = verdict.blocked_by or "unknown"
            teacher.metrics.lessons_blocked.labels(reason=blocked_by).inc()
            if self.event is not None:
                teacher.ledger.settle(self.event.seq, "blocked")
            log.warning(
                "lesson blocked by the leakage guard (%s) for %s…",
                blocked_by,
                self.recipient[:12],
                extra={"event": "lesson_blocked", "reason": blocked_by, "task": draft.task},
            )
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION, f"the leakage guard blocked this lesson: {verdict.reason}"
            )
        lesson = lesson_pb2.Lesson(
            recipient_node_id=self.recipient,
            task=draft.task,
            model=model,
            privacy=self._report(draft, verdict),
            parent_lesson_ids=list(draft.parents),
            created_at_unix_ms=int(time.time() * 1000),
        )
        getattr(lesson, _BODY_FIELDS[type(draft.body)]).CopyFrom(draft.body)
        sign_lesson(lesson, teacher.identity)
        teacher.save(lesson)
        if self.event is not None:
            teacher.ledger.settle(self.event.seq, "released", lesson.lesson_id)
        teacher.metrics.lessons_sent.labels(kind=kind_of(lesson), task=draft.task).inc()
        return lesson

    def _report(self, draft: Draft, verdict: GuardVerdict) -> lesson_pb2.PrivacyReport:
        ledger = self.teacher.ledger
        checks = [
            lesson_pb2.PrivacyCheck(name=c.name, value=c.value, threshold=c.threshold, passed=c.passed)
            for c in verdict.checks
        ]
        report = lesson_pb2.PrivacyReport(
            checks=checks,
            mechanism=draft.mechanism,
            parameters=draft.parameters,
            epsilon_spent=ledger.spent,
            epsilon_budget=ledger.budget,
            delta=ledger.delta,
        )
        if self.event is not None:
            report.epsilon_charged, report.delta_charged = self.event.epsilon, self.event.delta
        return report


class Releaser:
    """What every release needs from its teacher: identity, ledger, guard, store and metrics."""

    def __init__(
        self, identity: NodeIdentity, ledger: PrivacyLedger, guard: LeakageGuard, store: Store, metrics: NodeMetrics
    ) -> None:
        self.identity, self.ledger, self.guard, self.store, self.metrics = identity, ledger, guard, store, metrics

    def release(self, recipient: str) -> Release:
        return Release(self, recipient)

    def save(self, lesson: lesson_pb2.Lesson) -> None:
        """Keep every lesson sent (provenance): its signed bytes, by id."""
        row = (
            lesson.lesson_id,
            lesson.created_at_unix_ms,
            lesson.recipient_node_id,
            lesson.task,
            kind_of(lesson),
            lesson.SerializeToString(deterministic=True),
        )
        with self.store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO lessons VALUES (?, ?, ?, ?, ?, ?)", row)
