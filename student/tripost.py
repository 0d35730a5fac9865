"""TriPosT (Yu et al. 2023): learning to self-improve from interactive demonstrations.

The loop's warm-up (or a model trained elsewhere) is the first stage: SFT on gold rationales,
each ending with "Feedback: <all correct>" (`student.gold_feedback`). Then each of the
`tripost_iterations` iterations, as the reference code (jasonyux/TriPosT) does:

1. Interactive trajectory editing. The student attempts `tripost_questions` training questions
   at temperature 1.0. The teacher's `Critique` (a scripted verifier for verifiable tasks) judges
   each attempt: a correct one is kept with its "all correct" feedback; a wrong one gets the first
   wrong step and why, and an improvement that keeps the correct prefix. The improvement is
   critiqued again, up to `tripost_max_rounds` rounds. A trajectory that never becomes correct, or
   whose first wrong step does not move forward, is discarded.
2. Post-processing. Improvement examples (question, attempt, feedback, updated answer … final
   feedback; with `tripost_turns` one example per turn, the last turn joining the non-improvement
   ones) are all kept; ceil(n_imp / 1.5) non-improvement examples are sampled, and as many gold
   rationales of the iteration's questions: 1.5 : 1 : 1. Loss weights follow the reference's
   dataset: examples from improved trajectories weigh `tripost_feedback_weight` (1.5) from their
   first "Feedback:" on and `tripost_attempt_weight` (1) before; correct-at-once attempts and gold
   rationales weigh 1 throughout.
3. Weighted SFT for `tripost_epochs` (4) passes over the data, reshuffled each pass, continuing
   from the previous iteration's weights. `tripost_schedule: iteration` (the reference) trains the
   data alone with a fresh AdamW, a linear warm-up over `tripost_warmup_ratio` of the iteration's
   updates and cosine decay from `student.lr` to `lr x lr_min_ratio`. `run` gives each iteration an
   equal share of `student.steps` under the run's schedule and one optimizer, and fills each batch
   with gold problems beside the iteration's data: equal compute with an SFT control.

If an iteration collects fewer than `tripost_min_data` trajectories, learning stops early.
`tripost_attempts: synthetic` is a control: wherever the student's own attempt is wrong (by the
task's public verifier), it is replaced by the gold rationale with one number (or, without
numbers, two words) changed, so the data has as many improvements on the same questions, but
not of the student's own errors; everything after is the same.
Inference is self-improvement: the model writes attempt -> feedback -> updated answer … until its
feedback says correct, and the answer is the last "the answer is X" (Task.extract_answer).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from node.llm.schedule import LRSchedule, reset_optimizer
from node.llm.training import Segments, TrainingExample
from node.rpc.agora.v1 import teacher_pb2
from node.tasks.base import FEEDBACK, Example
from student.learner import Learner, StepResult, Tagged, apply_once, feedback_target

log = logging.getLogger("agora.student")

IMPROVEMENT_RATIO = 1.5  # improvement : non-improvement : gold = 1.5 : 1 : 1
CRITIQUES_IN_FLIGHT = 8  # trajectories edited at once: the teacher batches nothing, but RPC latency overlaps


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


@dataclass
class IterationPlan:
    """How an iteration's data is trained: its updates, and how many of each batch are its data."""

    updates: int  # optimizer updates this iteration makes
    per_batch: int  # examples of the iteration's data per update (the rest of a batch is gold)
    done: int = 0  # updates made so far

    @property
    def finished(self) -> bool:
        return self.done >= self.updates


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


def rebalance(
    improvement: list[Tagged], non_improvement: list[Tagged], gold: list[Tagged], rng: random.Random
) -> list[Tagged]:
    """Every improvement example, a random ceil(n_imp / 1.5) of the non-improvement ones and as many gold ones."""
    keep = math.ceil(len(improvement) / IMPROVEMENT_RATIO)
    return improvement + rng.sample(non_improvement, min(keep, len(non_improvement))) + gold[:keep]


def epochs_of(data: list[Tagged], epochs: float, rng: random.Random) -> list[Tagged]:
    """`epochs` passes over the data, each reshuffled; a fractional last pass takes a shuffled part."""
    passes: list[Tagged] = []
    whole, part = divmod(epochs, 1.0)
    for _ in range(int(whole)):
        passes += rng.sample(data, len(data))
    return passes + rng.sample(data, round(part * len(data)))


def turn_targets(t: Trajectory, feedback_weight: float, attempt_weight: float) -> tuple[list[Segments], Segments]:
    """The reference's convert_to_turns: one improvement example per wrong round (the answer so
    far, its feedback, the updated answer), and the last answer with its all-correct feedback."""
    answers = [t.attempt] + [updated for _, updated in t.rounds]
    turns: list[Segments] = [
        [
            (answers[i].rstrip("\n") + "\n", attempt_weight),
            (f"{FEEDBACK} {text}\nUpdated Answer: {answers[i + 1]}", feedback_weight),
        ]
        for i, (text, _) in enumerate(t.rounds)
    ]
    last: Segments = [(answers[-1].rstrip("\n") + "\n", 1.0), (f"{FEEDBACK} {t.final_feedback}", feedback_weight)]
    return turns, last


class TriPosTLearner(Learner):
    name = "tripost"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iteration = 0
        self.done = False
        self.plan: IterationPlan | None = None
        self.collected: list[dict[str, int]] = []  # per iteration: trajectories, kept examples by kind

    def state_dict(self) -> dict[str, Any]:
        plan = None if self.plan is None else asdict(self.plan)
        return {
            **super().state_dict(),
            "iteration": self.iteration,
            "done": self.done,
            "plan": plan,
            "collected": self.collected,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.iteration, self.done = int(state["iteration"]), bool(state["done"])
        plan = state.get("plan")
        self.plan = None if plan is None else IterationPlan(**plan)
        self.collected = list(state.get("collected", []))

    async def step(self, step: int) -> StepResult | None:
        discarded: frozenset[str] = frozenset()
        while (self.plan is None or self.plan.finished) and not self.done:
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
            data, unused = self.post_process(trajectories)
            discarded |= unused | self.plan_iteration(data, step)
        if self.done:
            return None if not discarded else StepResult(None, 0, discarded=discarded)
        assert self.plan is not None
        batch = self.next_batch(step)
        if self.ctx.settings.tripost_schedule == "iteration":
            if self.plan.done == 0:
                reset_optimizer(self.ctx.optimizer)  # a new Trainer per iteration in the reference
            self.iteration_schedule().apply(self.ctx.optimizer, self.plan.done + 1)
        self.plan.done += 1
        result = await self.train_on(batch)
        return StepResult(result.loss, result.examples, result.applied, discarded, result.kinds)

    # --- 1. interactive trajectory editing ---------------------------------------------------

    async def collect(self, iteration: int) -> tuple[list[Trajectory], frozenset[str]]:
        """Attempts on this iteration's questions, critiqued until correct; the kept trajectories
        and the lessons of discarded ones."""
        s, task = self.ctx.settings, self.ctx.task
        window = task.generate("train", s.tripost_questions, seed=s.seed * 1000 + iteration)
        prompts = [task.prompt(e.question) for e in window]
        budgets = [Learner.answer_budget(self, e) for e in window]  # one answer, not a self-improvement chain
        seed = (s.seed + 1) * 100_003 * iteration
        sampled = await self.sample(prompts, budgets, s.tripost_temperature, seed=seed)
        attempts = [text.split(f"\n{FEEDBACK}")[0] for text in sampled]
        if s.tripost_attempts == "synthetic":  # the same questions wrong, but with errors not of the student's making
            rng = random.Random(s.seed * 100_003 + iteration)
            attempts = [
                attempt if task.verify(e, attempt).correct else corrupt(e.rationale, rng)
                for e, attempt in zip(window, attempts, strict=True)
            ]
        in_flight = asyncio.Semaphore(CRITIQUES_IN_FLIGHT)

        async def edited(example: Example, attempt: str) -> Trajectory | None:
            async with in_flight:
                return await self.edit(example, attempt)

        trajectories = await asyncio.gather(*(edited(e, a) for e, a in zip(window, attempts, strict=True)))
        kept, discarded = [], set()
        for trajectory in trajectories:
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
        """The rebalanced training data, and the lessons of examples left out."""
        s, task = self.ctx.settings, self.ctx.task
        improvement, non_improvement = [], []
        for t in trajectories:
            prompt, lessons = task.prompt(t.example.question), tuple(t.lessons)
            if not t.improved:  # right at once: the attempt and its verdict, weight 1 throughout
                target = feedback_target(t.attempt, [], t.final_feedback, 1.0)
                non_improvement.append(Tagged(TrainingExample(prompt, target), lessons, "non_improvement"))
            elif s.tripost_turns:
                turns, last = turn_targets(t, s.tripost_feedback_weight, s.tripost_attempt_weight)
                improvement += [Tagged(TrainingExample(prompt, turn), lessons, "improvement") for turn in turns]
                non_improvement.append(Tagged(TrainingExample(prompt, last), lessons, "non_improvement"))
            else:
                target = feedback_target(
                    t.attempt, t.rounds, t.final_feedback, s.tripost_feedback_weight, s.tripost_attempt_weight
                )
                improvement.append(Tagged(TrainingExample(prompt, target), lessons, "improvement"))
        rng = random.Random(s.seed * 7919 + self.iteration)
        # Gold rationales of the iteration's own questions, as the reference takes them.
        gold = [Tagged(self.gold_example(t.example), (), "gold") for t in rng.sample(trajectories, len(trajectories))]
        data = rebalance(improvement, non_improvement, gold, rng)
        kept = {id(t) for t in data}
        left_out = frozenset(lesson for t in non_improvement if id(t) not in kept for lesson in t.lessons) - {
            lesson for t in data for lesson in t.lessons
        }
        counts = {kind: sum(t.kind == kind for t in data) for kind in ("improvement", "non_improvement", "gold")}
        self.collected.append({"iteration": self.iteration, "trajectories": len(trajectories), **counts})
        return data, left_out

    # --- 3. training -------------------------------------------------------------------------

    def plan_iteration(self, data: list[Tagged], step: int) -> frozenset[str]:
        """Queue `tripost_epochs` passes over the data and decide how they are trained; the lessons
        of examples that do not fit (schedule `run`, more data than the iteration's share holds)."""
        s = self.ctx.settings
        self.queue = apply_once(epochs_of(data, s.tripost_epochs, random.Random(s.seed * 104_729 + self.iteration)))
        if s.tripost_schedule == "iteration":
            self.plan = IterationPlan(updates=math.ceil(len(self.queue) / s.batch_size), per_batch=s.batch_size)
            return frozenset()
        left = s.tripost_iterations - self.iteration + 1
        share = max(1, math.ceil((s.steps - step + 1) / left))  # this iteration's part of the steps left
        per_batch = min(s.batch_size, math.ceil(len(self.queue) / share))
        self.plan = IterationPlan(updates=share, per_batch=per_batch)
        if len(self.queue) <= share * per_batch:
            return frozenset()
        # More than its share holds: the data is seen fewer times, and compute stays equal to the control's.
        log.info(
            "TriPosT iteration %d: %d updates of %d hold %.2f of %g passes over its %d examples",
            self.iteration,
            share,
            per_batch,
            share * per_batch / len(data),
            s.tripost_epochs,
            len(data),
        )
        kept, dropped = self.queue[: share * per_batch], self.queue[share * per_batch :]
        self.queue = kept
        applied = {lesson for t in kept for lesson in t.lessons}
        return frozenset(lesson for t in dropped for lesson in t.lessons) - applied

    def iteration_schedule(self) -> LRSchedule:
        """Schedule `iteration`: warm-up then cosine over this iteration's updates."""
        s, plan = self.ctx.settings, self.plan
        assert plan is not None
        warmup = math.ceil(s.tripost_warmup_ratio * plan.updates)
        return LRSchedule(s.lr, plan.updates, warmup, s.lr_min_ratio, "cosine")

    def next_batch(self, step: int) -> list[Tagged]:
        """The plan's share of the iteration's data, then gold problems to fill the batch."""
        assert self.plan is not None
        size = self.ctx.settings.batch_size
        batch, self.queue = self.queue[: self.plan.per_batch], self.queue[self.plan.per_batch :]
        if len(batch) < size and self.ctx.settings.tripost_schedule == "run":
            batch += self.gold_batch(size - len(batch), seed=self.ctx.settings.seed * 1_000_003 + step)
        return batch

    # --- inference ---------------------------------------------------------------------------

    def answer_budget(self, example: Example) -> int:
        """Room for an attempt, feedback and an updated answer: self-improvement at inference."""
        return super().answer_budget(example) * 3
