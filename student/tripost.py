"""TriPosT (Yu et al. 2023): learning to self-improve from interactive demonstrations.

The loop runs the first stage, SFT on gold rationales, as its warm-up. Then each of the
`tripost_iterations` iterations:

1. Interactive trajectory editing. The student attempts a window of training questions at
   temperature 1.0. The teacher's `Critique` (a scripted verifier for verifiable tasks) judges
   each attempt: a correct one is kept with its "all correct" feedback; a wrong one gets the first
   wrong step and why, and an improvement that keeps the correct prefix. The improvement is
   critiqued again, up to `tripost_max_rounds` rounds. A trajectory that never becomes correct, or
   whose first wrong step does not move forward, is discarded.
2. Post-processing. Improvement examples (question, attempt, feedback, updated answer … final
   feedback) are all kept; non-improvement examples (a correct attempt and its feedback) are kept
   at n_nonimp = ceil(n_imp / 1.5), and as many gold rationales: 1.5 : 1 : 1.
3. Weighted SFT, continuing from the previous iteration's weights: one pass over the shuffled
   data, weight `tripost_feedback_weight` (1.5) on every token from "Feedback:" on.

If an iteration collects fewer than `tripost_min_data` trajectories, learning stops early.
`tripost_attempts: synthetic` is a control: the attempts are gold rationales with one number (or,
without numbers, two words) changed, not the student's own errors; everything after is the same.
Inference is self-improvement: the model writes attempt → feedback → updated answer … until its
feedback says correct, and the answer is the last "the answer is X" (Task.extract_answer).
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from node.llm.training import TrainingExample
from node.rpc.agora.v1 import teacher_pb2
from node.tasks.base import Example
from student.learner import FEEDBACK, Learner, StepResult, Tagged, feedback_target

log = logging.getLogger("agora.student")

IMPROVEMENT_RATIO = 1.5  # improvement : non-improvement : gold = 1.5 : 1 : 1


@dataclass
class Trajectory:
    """One question's attempt and its rounds of critique."""

    example: Example
    attempt: str
    rounds: list[tuple[str, str]] = field(default_factory=list)  # (feedback, updated answer) per wrong round
    final_feedback: str = ""
    lessons: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    correct: bool = False

    @property
    def improved(self) -> bool:
        return bool(self.rounds)


def corrupt(rationale: str, rng: random.Random) -> str:
    """A synthetic wrong attempt: the gold rationale with one number of one step changed (or, in a
    step without numbers, two neighbouring words swapped). Later steps are left as they were."""
    lines = rationale.split("\n")
    steps = [i for i, line in enumerate(lines) if re.search(r"\d", line)] or list(range(len(lines)))
    index = rng.choice(steps)
    label_end = lines[index].find(") ") + 2 if lines[index].startswith("(") else 0  # "(2) " is not a number to change
    numbers = [m for m in re.finditer(r"-?\d+", lines[index]) if m.start() >= label_end]
    if numbers:
        hit = rng.choice(numbers)
        wrong = int(hit.group()) + rng.choice([-3, -2, -1, 1, 2, 3])
        lines[index] = lines[index][: hit.start()] + str(wrong) + lines[index][hit.end() :]
    else:
        words = lines[index].split(" ")
        if len(words) > 1:
            k = rng.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
        lines[index] = " ".join(words)
    return "\n".join(lines)


def rebalance(improvement: list[Tagged], non_improvement: list[Tagged], gold: list[Tagged]) -> list[Tagged]:
    """Keep every improvement example, ceil(n_imp / 1.5) non-improvement ones and as many gold ones."""
    keep = math.ceil(len(improvement) / IMPROVEMENT_RATIO)
    return improvement + non_improvement[:keep] + gold[:keep]


class TriPosTLearner(Learner):
    name = "tripost"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iteration = 0
        self.done = False
        self.collected: list[dict[str, int]] = []  # per iteration: trajectories, kept examples by kind

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "iteration": self.iteration, "done": self.done, "collected": self.collected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.iteration, self.done = int(state["iteration"]), bool(state["done"])
        self.collected = list(state.get("collected", []))

    async def step(self, step: int) -> StepResult | None:
        discarded: frozenset[str] = frozenset()
        while not self.queue and not self.done:
            if self.iteration == self.ctx.settings.tripost_iterations:
                self.done = True
                break
            self.iteration += 1
            trajectories, thrown = await self.collect(self.iteration)
            discarded |= thrown
            if len(trajectories) < self.ctx.settings.tripost_min_data:
                log.info(
                    "TriPosT iteration %d collected %d trajectories, under tripost_min_data %d: stopping",
                    self.iteration,
                    len(trajectories),
                    self.ctx.settings.tripost_min_data,
                )
                self.done = True
                break
            self.queue, unused = self.post_process(trajectories)
            discarded |= unused
        if not self.queue:
            return None if not discarded else StepResult(None, 0, discarded=discarded)
        result = await self.train_next()
        return StepResult(result.loss, result.examples, result.applied, discarded, result.kinds)

    # --- 1. interactive trajectory editing ---------------------------------------------------

    async def collect(self, iteration: int) -> tuple[list[Trajectory], frozenset[str]]:
        """Attempts on this iteration's window, critiqued until correct; the kept trajectories and
        the lessons of discarded ones."""
        s, task = self.ctx.settings, self.ctx.task
        window = task.generate("train", s.tripost_questions, seed=s.seed * 1000 + iteration)
        prompts = [task.prompt(e.question) for e in window]
        if s.tripost_attempts == "synthetic":
            rng = random.Random(s.seed * 100_003 + iteration)
            attempts = [corrupt(e.rationale, rng) for e in window]
        else:
            budgets = [Learner.answer_budget(self, e) for e in window]  # one answer, not a self-improvement chain
            seed = (s.seed + 1) * 100_003 * iteration
            sampled = await self.sample(prompts, budgets, s.tripost_temperature, seed=seed)
            attempts = [text.split(f"\n{FEEDBACK}")[0] for text in sampled]
        kept, discarded = [], set()
        for example, attempt in zip(window, attempts, strict=True):
            trajectory = await self.edit(example, attempt)
            if trajectory is None:
                continue
            if trajectory.correct:
                kept.append(trajectory)
            else:
                discarded |= set(trajectory.lessons)
            for teacher in set(trajectory.teachers):
                self.ctx.teachers.credit(teacher, trajectory.correct)
        log.info(
            "TriPosT iteration %d: %d attempts, %d correct at once, %d improved, %d discarded",
            iteration,
            len(window),
            sum(not t.improved for t in kept),
            sum(t.improved for t in kept),
            len(window) - len(kept),
        )
        return kept, frozenset(discarded)

    async def edit(self, example: Example, attempt: str) -> Trajectory | None:
        """Critique rounds on one attempt; None when no teacher gave a critique at all."""
        trajectory = Trajectory(example, attempt)
        current, previous_id, last_wrong = attempt, "", 0
        for round_number in range(1, self.ctx.settings.tripost_max_rounds + 1):
            request = teacher_pb2.CritiqueRequest(
                task=self.ctx.settings.task,
                question=example.question,
                attempt=current,
                round=round_number,
                previous_lesson_id=previous_id,
            )
            received = await self.ctx.teachers.lesson("Critique", request)
            if received is None:  # blocked by the teacher's guard: no feedback this round
                return trajectory if trajectory.lessons else None
            trajectory.lessons.append(received.lesson_id)
            trajectory.teachers.append(received.teacher)
            feedback = received.lesson.feedback
            if feedback.correct:
                trajectory.final_feedback, trajectory.correct = feedback.text, True
                return trajectory
            progress = feedback.first_wrong_step > last_wrong or round_number == 1
            if not feedback.improved_answer or not progress:
                return trajectory  # no progress: discarded by the caller (correct stays False)
            trajectory.rounds.append((feedback.text, feedback.improved_answer))
            current, previous_id, last_wrong = feedback.improved_answer, received.lesson_id, feedback.first_wrong_step
        return trajectory  # never became correct within the rounds

    # --- 2. post-processing ------------------------------------------------------------------

    def post_process(self, trajectories: list[Trajectory]) -> tuple[list[Tagged], frozenset[str]]:
        """The rebalanced, shuffled training data, and the lessons of examples left out."""
        s, task = self.ctx.settings, self.ctx.task
        improvement, non_improvement = [], []
        for t in trajectories:
            prompt = task.prompt(t.example.question)
            target = feedback_target(t.attempt, t.rounds, t.final_feedback, s.tripost_feedback_weight)
            tagged = Tagged(TrainingExample(prompt, target), tuple(t.lessons), "improvement" if t.improved else "")
            if t.improved:
                improvement.append(tagged)
            else:
                non_improvement.append(Tagged(tagged.example, tagged.lessons, "non_improvement"))
        order = random.Random(s.seed * 7919 + self.iteration)
        order.shuffle(non_improvement)
        keep = math.ceil(len(improvement) / IMPROVEMENT_RATIO)
        golden = task.generate("train", keep, seed=s.seed + 10_000 * self.iteration)
        gold = [Tagged(TrainingExample(task.prompt(e.question), e.rationale), (), "gold") for e in golden]
        data = rebalance(improvement, non_improvement, gold)
        left_out = frozenset(lesson for t in non_improvement[keep:] for lesson in t.lessons)
        counts = {kind: sum(t.kind == kind for t in data) for kind in ("improvement", "non_improvement", "gold")}
        self.collected.append({"iteration": self.iteration, "trajectories": len(trajectories), **counts})
        order.shuffle(data)
        return data, left_out

    # --- inference ---------------------------------------------------------------------------

    def answer_budget(self, example: Example) -> int:
        """Room for an attempt, feedback and an updated answer: self-improvement at inference."""
        return super().answer_budget(example) * 3
