"""YODA (Lu et al. 2024): teacher-student progressive learning.

For each basic question of the training data, in turn:

1. The teacher `Pose`s m generalized variants and H levels of harder questions.
2. For every question, basic first, the student answers; the teacher `Critique`s; the student
   refines its answer from the feedback, up to R rounds, until the critique says correct. If it
   never does, the last critique's improved answer closes the record, so the data ends right.
3. All procedural data (question, answer, feedback, refinements) becomes SFT examples in
   curriculum order: basic, then generalized, then harder by level; the queue is trained on in
   that order, without shuffling.

Two controls separate the value of interaction from the value of more questions:
`yoda_control: basic_only` does the same interaction on basic questions alone (no Pose), and
`gold_only` trains on the same basic and posed questions with their gold answers and no
interaction (the gold answer of a posed question comes from the task's public solver).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from node.llm.training import TrainingExample
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks.base import Example
from student.learner import FEEDBACK, Learner, StepResult, Tagged

log = logging.getLogger("agora.student")

REFINED = "Refined Answer:"
TIER_ORDER = {"basic": 0, "generalized": 1, "harder": 2}
DEFAULT_ANSWER_TOKENS = 64  # for questions the task cannot solve itself (no gold length to go by)


@dataclass(frozen=True)
class Question:
    text: str
    tier: str  # "basic", "generalized" or "harder"
    level: int  # 0 for basic and generalized; 1..H for harder


def curriculum(questions: list[Question]) -> list[Question]:
    """Basic, then generalized, then harder questions by level (stable within a level)."""
    return sorted(questions, key=lambda q: (TIER_ORDER[q.tier], q.level))


class YodaLearner(Learner):
    name = "yoda"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.basic_seen = 0  # basic questions used so far (the cursor into the training split)
        self.rounds_used: list[int] = []  # refinement rounds per question, for the summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "basic_seen": self.basic_seen, "rounds_used": self.rounds_used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.basic_seen = int(state["basic_seen"])
        self.rounds_used = [int(r) for r in state.get("rounds_used", [])]

    async def step(self, step: int) -> StepResult | None:
        while not self.queue:
            self.basic_seen += 1
            self.queue = await self.lessons_for(self.next_basic())
        return await self.train_next()

    def next_basic(self) -> Example:
        s = self.ctx.settings
        return self.ctx.task.generate("train", 1, seed=s.seed * 1_000_003 + self.basic_seen)[0]

    async def lessons_for(self, basic: Example) -> list[Tagged]:
        """The procedural data of one basic question, in curriculum order."""
        s = self.ctx.settings
        questions, pose_lessons = [Question(basic.question, "basic", 0)], tuple[str, ...]()
        if s.yoda_control != "basic_only" and s.yoda_generalized + s.yoda_harder_levels > 0:
            request = teacher_pb2.PoseRequest(
                task=s.task,
                question=basic.question,
                num_generalized=s.yoda_generalized,
                num_harder_levels=s.yoda_harder_levels,
            )
            received = await self.ctx.teachers.lesson("Pose", request)
            if received is not None:
                pose_lessons = (received.lesson_id,)
                for posed in received.lesson.questions.questions:
                    harder = posed.tier == lesson_pb2.QUESTION_TIER_HARDER
                    questions.append(Question(posed.text, "harder" if harder else "generalized", posed.level))
        data: list[Tagged] = []
        for question in curriculum(questions):
            if s.yoda_control == "gold_only":
                tagged = self.gold(question)
            else:
                tagged = await self.interact(question)
            if tagged is not None:
                data.append(tagged)
        if data and pose_lessons:  # the Pose lesson is first applied with the first posed question
            first_posed = next((i for i, t in enumerate(data) if t.kind != "basic"), 0)
            t = data[first_posed]
            data[first_posed] = Tagged(t.example, pose_lessons + t.lessons, t.kind)
        return data

    def gold(self, question: Question) -> Tagged | None:
        example = self.ctx.task.solve(question.text)
        if example is None:
            return None
        return Tagged(TrainingExample(self.ctx.task.prompt(question.text), example.rationale), (), question.tier)

    async def interact(self, question: Question) -> Tagged | None:
        """Answer, critique, refine up to R rounds; one SFT example of the whole exchange."""
        s, task = self.ctx.settings, self.ctx.task
        prompt = task.prompt(question.text)
        budget = self.budget_for(question.text)
        seed = (s.seed + 1) * 7_000_003 + self.basic_seen * 1009
        answer = (await self.sample([prompt], [budget], 0.7, seed))[0].split(f"\n{FEEDBACK}")[0]
        record, lessons, current, previous = answer.rstrip("\n"), [], answer, ""
        for round_number in range(1, s.yoda_rounds + 1):
            request = teacher_pb2.CritiqueRequest(
                task=s.task, question=question.text, attempt=current, round=round_number, previous_lesson_id=previous
            )
            received = await self.ctx.teachers.lesson("Critique", request)
            if received is None:
                break
            lessons.append(received.lesson_id)
            feedback = received.lesson.feedback
            self.ctx.teachers.credit(received.teacher, True)
            record += f"\n{FEEDBACK} {feedback.text}"
            if feedback.correct:
                self.rounds_used.append(round_number)
                break
            refine_prompt = f"{prompt}{record}\n{REFINED} "
            # Out of rounds, or out of context for another answer: the teacher's improvement closes the record.
            if round_number == s.yoda_rounds or not self.fits(refine_prompt, budget):
                record += f"\n{REFINED} {feedback.improved_answer}" if feedback.improved_answer else ""
                self.rounds_used.append(round_number)
                break
            current = (await self.sample([refine_prompt], [budget], 0.7, seed + round_number))[0]
            current = current.split(f"\n{FEEDBACK}")[0]
            record += f"\n{REFINED} {current}"
            previous = received.lesson_id
        if not lessons:
            return None
        return Tagged(TrainingExample(prompt, record), tuple(lessons), question.tier)

    def budget_for(self, question: str) -> int:
        solved = self.ctx.task.solve(question)
        return self.answer_budget(solved) if solved is not None else DEFAULT_ANSWER_TOKENS
