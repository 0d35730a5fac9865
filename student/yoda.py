"""YODA (Lu et al. 2024): teacher-student progressive learning.

The student learns from collections of `yoda_questions` basic questions of its training data:

1. Expansion. For each basic question the teacher `Pose`s m generalized variants and one harder
   question on each of H levels.
2. Interaction. Every question is answered by the student (temperature 0.7); the teacher
   `Critique`s the answer; the student refines it from the feedback, up to R rounds, until the
   critique says correct. If it never does, the last critique's improved answer closes the
   record, so every record ends right. A round's answers are sampled in one batch and critiqued
   concurrently.
3. Procedural data. Each question gives one SFT example: its answers, each critique's feedback
   and the refinements. Answers a critique judged wrong weigh `yoda_wrong_weight` (0: the student
   learns the teacher's feedback and the verified answers, not its own mistakes); the feedback
   and the answer that closes the record weigh 1.
4. Progressive training. The whole collection is ordered basic, then generalized, then harder by
   level (`yoda_order: curriculum`, the paper's), or shuffled (the control that isolates the
   curriculum), and trained for `yoda_epochs` passes, each pass in that order.

Two controls separate the value of interaction from the value of more questions:
`yoda_control: basic_only` does the same interaction on basic questions alone (no Pose), and
`gold_only` trains on the same basic and posed questions with their gold answers and no
interaction (the gold answer of a posed question comes from the task's public solver).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from node.llm.training import Segments, TrainingExample
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks.base import FEEDBACK, Example
from student.learner import Learner, StepResult, Tagged, apply_once

log = logging.getLogger("agora.student")

REFINED = "Refined Answer:"
TIER_ORDER = {"basic": 0, "generalized": 1, "harder": 2}
DEFAULT_ANSWER_TOKENS = 64  # for questions the task cannot solve itself (no gold length to go by)
POSES_IN_FLIGHT = 8  # Pose and Critique calls outstanding at once: their RPC latency overlaps
SAMPLING_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Question:
    text: str
    tier: str  # "basic", "generalized" or "harder"
    level: int  # 0 for basic and generalized; 1..H for harder
    origin: int = 0  # index of its basic question in the collection


@dataclass
class Record:
    """One question's interaction so far, as weighted segments of its SFT target."""

    question: Question
    segments: list[tuple[str, float]]
    lessons: list[str]
    answer: str  # the latest answer, critiqued next
    closed: bool = False


def curriculum(questions: list[Question]) -> list[Question]:
    """Basic, then generalized, then harder questions by level (stable within a level)."""
    return sorted(questions, key=lambda q: (TIER_ORDER[q.tier], q.level))


class YodaLearner(Learner):
    name = "yoda"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collections = 0  # collections built so far (seeds the next one's basic questions)
        self.basic_seen = 0  # basic questions used so far
        self.rounds_used: list[int] = []  # critique rounds per question, for the summary

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "collections": self.collections,
            "basic_seen": self.basic_seen,
            "rounds_used": self.rounds_used,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.collections = int(state.get("collections", 0))
        self.basic_seen = int(state["basic_seen"])
        self.rounds_used = [int(r) for r in state.get("rounds_used", [])]

    async def step(self, step: int) -> StepResult | None:
        while not self.queue:
            self.collections += 1
            self.queue = await self.collect(self.next_basics())
        return await self.train_next()

    def next_basics(self) -> list[Example]:
        s = self.ctx.settings
        return self.ctx.task.generate("train", s.yoda_questions, seed=s.seed * 1_000_003 + self.collections)

    async def collect(self, basics: list[Example]) -> list[Tagged]:
        """A collection's procedural data, ordered and repeated for training."""
        s = self.ctx.settings
        self.basic_seen += len(basics)
        questions, pose_lessons = await self.expand(basics)
        if s.yoda_control == "gold_only":
            data = [(q, tagged) for q in questions if (tagged := self.gold(q)) is not None]
        else:
            data = await self.interact(questions)
        rng = random.Random(s.seed * 15_485_863 + self.collections)
        whole, part = divmod(s.yoda_epochs, 1.0)
        passes: list[tuple[Question, Tagged]] = []
        for index in range(int(whole) + (part > 0)):
            one = self.order(data, rng)
            passes += one if index < int(whole) else one[: round(part * len(one))]
        queue = []
        for question, tagged in passes:
            # Each Pose lesson is first applied with the first posed question of its basic question.
            pose = (
                ()
                if question.tier == "basic" or question.origin not in pose_lessons
                else (pose_lessons.pop(question.origin),)
            )
            queue.append(Tagged(tagged.example, (*pose, *tagged.lessons), tagged.kind))
        return apply_once(queue)

    def order(self, data: list[tuple[Question, Tagged]], rng: random.Random) -> list[tuple[Question, Tagged]]:
        """One pass: the curriculum (stable within a level), or a shuffle."""
        if self.ctx.settings.yoda_order == "shuffled":
            return rng.sample(data, len(data))
        ranked = {id(q): rank for rank, q in enumerate(curriculum([q for q, _ in data]))}
        return sorted(data, key=lambda pair: ranked[id(pair[0])])

    async def expand(self, basics: list[Example]) -> tuple[list[Question], dict[int, str]]:
        """The basic questions and what the teacher posed from each, with each Pose lesson by basic question."""
        s = self.ctx.settings
        questions = [Question(b.question, "basic", 0, i) for i, b in enumerate(basics)]
        if s.yoda_control == "basic_only" or s.yoda_generalized + s.yoda_harder_levels == 0:
            return questions, {}
        in_flight = asyncio.Semaphore(POSES_IN_FLIGHT)

        async def posed(question: Question) -> tuple[Question, Any]:
            request = teacher_pb2.PoseRequest(
                task=s.task,
                question=question.text,
                num_generalized=s.yoda_generalized,
                num_harder_levels=s.yoda_harder_levels,
            )
            async with in_flight:
                return question, await self.ctx.teachers.lesson("Pose", request)

        lessons: dict[int, str] = {}
        for basic, received in await asyncio.gather(*(posed(q) for q in list(questions))):
            if received is None:
                continue
            lessons[basic.origin] = received.lesson_id
            for item in received.lesson.questions.questions:
                tier = "harder" if item.tier == lesson_pb2.QUESTION_TIER_HARDER else "generalized"
                questions.append(Question(item.text, tier, item.level, basic.origin))
        return questions, lessons

    def gold(self, question: Question) -> Tagged | None:
        """The question's gold rationale (from the task's public solver), no interaction."""
        example = self.ctx.task.solve(question.text)
        if example is None:
            return None
        return Tagged(self.gold_example(example), (), question.tier)

    async def interact(self, questions: list[Question]) -> list[tuple[Question, Tagged]]:
        """Answer, critique, refine up to R rounds, a round at a time over all open records."""
        s, task = self.ctx.settings, self.ctx.task
        records = [Record(q, [], [], "") for q in questions]
        prompts = [task.prompt(q.text) for q in questions]
        budgets = [self.budget_for(q.text) for q in questions]
        seed = (s.seed + 1) * 7_000_003 + self.collections * 1009
        for i, answer in enumerate(await self.sample(prompts, budgets, SAMPLING_TEMPERATURE, seed)):
            records[i].answer = _answer_only(answer)
        in_flight = asyncio.Semaphore(POSES_IN_FLIGHT)
        for round_number in range(1, s.yoda_rounds + 1):
            open_rows = [i for i, r in enumerate(records) if not r.closed]
            if not open_rows:
                break
            critiques = [self.critique(records[i], round_number, in_flight) for i in open_rows]
            refine: list[int] = []
            for row, received in zip(open_rows, await asyncio.gather(*critiques), strict=True):
                if self.close_or_continue(records[row], received, round_number, budgets[row]):
                    refine.append(row)
            if refine:
                refine_prompts = [self.refine_prompt(records[row]) for row in refine]
                answers = await self.sample(
                    refine_prompts, [budgets[row] for row in refine], SAMPLING_TEMPERATURE, seed + round_number
                )
                for row, answer in zip(refine, answers, strict=True):
                    records[row].answer = _answer_only(answer)
        return [
            (
                r.question,
                Tagged(
                    TrainingExample(task.prompt(r.question.text), _segments(r.segments)),
                    tuple(r.lessons),
                    r.question.tier,
                ),
            )
            for r in records
            if r.lessons
        ]

    async def critique(self, record: Record, round_number: int, in_flight: asyncio.Semaphore) -> Any:
        """The teacher's critique of the record's latest answer (None if its guard blocked it)."""
        request = teacher_pb2.CritiqueRequest(
            task=self.ctx.settings.task,
            question=record.question.text,
            attempt=record.answer,
            round=round_number,
            previous_lesson_id=record.lessons[-1] if record.lessons else "",
        )
        async with in_flight:
            return await self.ctx.teachers.lesson("Critique", request)

    def close_or_continue(self, record: Record, received: Any, round_number: int, budget: int) -> bool:
        """Add one critique to the record; True when the student should refine its answer next."""
        s = self.ctx.settings
        if received is None:  # blocked by the teacher's guard: the record ends here
            record.closed = True
            return False
        record.lessons.append(received.lesson_id)
        self.ctx.teachers.credit(received.teacher, True)
        feedback = received.lesson.feedback
        opening = "" if not record.segments else f"\n{REFINED} "
        record.segments.append((f"{opening}{record.answer.rstrip()}", 1.0 if feedback.correct else s.yoda_wrong_weight))
        record.segments.append((f"\n{FEEDBACK} {feedback.text}", 1.0))
        if feedback.correct:
            record.closed = True
            self.rounds_used.append(round_number)
            return False
        # Out of rounds, or out of context for another answer: the teacher's improvement closes the record.
        if round_number == s.yoda_rounds or not self.fits(self.refine_prompt(record), budget):
            if feedback.improved_answer:
                record.segments.append((f"\n{REFINED} {feedback.improved_answer}", 1.0))
            record.closed = True
            self.rounds_used.append(round_number)
            return False
        return True

    def refine_prompt(self, record: Record) -> str:
        """The question, the record so far, and the cue for a refined answer."""
        written = "".join(text for text, _ in record.segments)
        return f"{self.ctx.task.prompt(record.question.text)}{written}\n{REFINED} "

    def budget_for(self, question: str) -> int:
        solved = self.ctx.task.solve(question)
        return self.answer_budget(solved) if solved is not None else DEFAULT_ANSWER_TOKENS


def _answer_only(text: str) -> str:
    """A sampled answer without the verdict a gold-with-feedback student writes after it."""
    return text.split(f"\n{FEEDBACK}")[0]


def _segments(segments: list[tuple[str, float]]) -> Segments:
    """Merge neighbouring segments of equal weight (fewer, longer pieces to tokenize)."""
    merged: list[tuple[str, float]] = []
    for text, weight in segments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged
