"""The Learner interface every algorithm plugs into, and what algorithms share.

The learning loop calls `step` once per update and `evaluate` every K updates, and saves
`state_dict` (JSON) beside the weights in each checkpoint. An algorithm keeps the training
examples it has built but not yet trained on in a queue; each example carries the lessons it
applies first, so the loop can record which lessons fed which update.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from node.config import StudentSection
from node.llm.host import ModelHost
from node.llm.sampling import SamplingParams
from node.llm.schedule import LRSchedule
from node.llm.tokenizer import encode
from node.llm.training import Segments, TrainingExample
from node.tasks.base import FEEDBACK, Example, Split, Task, gold_target
from student.teachers import TeacherPool

EVAL_SPLITS: tuple[Split, ...] = ("seen", "unseen")
NO_ANSWER = "(no answer)"  # what an empty sample is sent as: teachers refuse empty attempts
SAMPLE_BATCH = 64  # prompts sampled together: one padded batch of hundreds wastes more than it saves


@dataclass(frozen=True)
class Tagged:
    """A training example, the lessons it applies first, and what kind of data it is."""

    example: TrainingExample
    lessons: tuple[str, ...] = ()
    kind: str = ""  # e.g. "improvement", "non_improvement", "gold" (TriPosT); "basic", "harder" (YODA)

    def to_json(self) -> dict[str, Any]:
        target = self.example.target
        return {
            "prompt": self.example.prompt,
            "target": target if isinstance(target, str) else [[text, weight] for text, weight in target],
            "lessons": list(self.lessons),
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tagged:
        raw = data["target"]
        target: str | Segments = raw if isinstance(raw, str) else [(str(t), float(w)) for t, w in raw]
        return cls(TrainingExample(str(data["prompt"]), target), tuple(data["lessons"]), str(data["kind"]))


@dataclass(frozen=True)
class StepResult:
    """What one update did."""

    loss: float | None  # None when the step changed no weights (e.g. in-context lessons installed)
    examples: int
    applied: frozenset[str] = frozenset()  # lessons this update applied first
    discarded: frozenset[str] = frozenset()  # lessons its data collection set aside
    kinds: tuple[str, ...] = ()  # the kind of each example trained on, in order


@dataclass
class LearnerContext:
    """What an algorithm works with: the student's model and optimizer, its task, and its teachers."""

    host: ModelHost
    optimizer: torch.optim.Optimizer
    task: Task
    settings: StudentSection
    teachers: TeacherPool
    schedule: LRSchedule  # the run's learning rate by update (the loop applies it before each step)
    log: list[str] = field(default_factory=list)  # notes for the end-of-run summary
    run_dir: Path | None = None  # where an algorithm writes its own records (<data_dir>/student)


def run_schedule(s: StudentSection) -> LRSchedule:
    """The run's schedule from the student settings (it may have begun before this run)."""
    total = s.lr_schedule_steps or s.lr_schedule_start + s.steps
    return LRSchedule(s.lr, total, s.lr_warmup_steps, s.lr_min_ratio, s.lr_schedule)


class Learner(ABC):
    """One learning algorithm over a student's model."""

    name: ClassVar[str]

    def __init__(self, ctx: LearnerContext) -> None:
        self.ctx = ctx
        self.queue: list[Tagged] = []  # examples built and not yet trained on, in training order

    @abstractmethod
    async def step(self, step: int) -> StepResult | None:
        """One update (asking teachers first when the queue is empty); None once the algorithm is done."""

    def state_dict(self) -> dict[str, Any]:
        return {"queue": [tagged.to_json() for tagged in self.queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.queue = [Tagged.from_json(item) for item in state.get("queue", [])]

    def save_files(self, directory: Path) -> None:
        """Write what the algorithm keeps beside the weights (tensors as safetensors) into a checkpoint."""
        return None  # most algorithms keep everything in state_dict

    def load_files(self, directory: Path) -> None:
        """Read back what save_files wrote, when resuming from that checkpoint."""
        return None

    def pending_lessons(self) -> set[str]:
        """Lessons in the queue: received, not yet applied."""
        return {lesson for tagged in self.queue for lesson in tagged.lessons}

    # --- what algorithms share -------------------------------------------------------------

    async def train_next(self) -> StepResult:
        """One update on the next batch of the queue."""
        batch, self.queue = self.queue[: self.ctx.settings.batch_size], self.queue[self.ctx.settings.batch_size :]
        return await self.train_on(batch)

    async def train_on(self, batch: Sequence[Tagged], discarded: frozenset[str] = frozenset()) -> StepResult:
        """One optimizer step on the batch, on the model's worker thread (the event loop keeps serving)."""
        host = self.ctx.host
        loss = await host.run(host.train_step, [t.example for t in batch], self.ctx.optimizer)
        applied = frozenset(lesson for t in batch for lesson in t.lessons)
        return StepResult(loss, len(batch), applied, discarded, tuple(t.kind for t in batch))

    def gold_example(self, example: Example) -> TrainingExample:
        """A gold rationale as this student trains on it (with the all-correct feedback unless
        `student.gold_feedback` is off)."""
        target = gold_target(example.rationale, self.ctx.settings.gold_feedback)
        return TrainingExample(self.ctx.task.prompt(example.question), target)

    def gold_batch(self, n: int, seed: int) -> list[Tagged]:
        """n gold problems from the student's own training data (its pool, if the task has one)."""
        return [Tagged(self.gold_example(e), (), "gold") for e in self.ctx.task.generate("train", n, seed)]

    def prompt_prefix(self) -> str:
        """Text put before every prompt at inference (Social Learning's in-context lessons)."""
        return ""

    def in_context(self, prompt: str, answer_tokens: int) -> str:
        """The prompt as the model reads it at inference: after the prefix, which an algorithm may
        shorten so that the prompt and `answer_tokens` fit the model's context."""
        return self.prompt_prefix() + prompt

    def answer_budget(self, example: Example) -> int:
        """Tokens an answer to this example may take: its gold rationale's length and some slack."""
        return len(encode(self.ctx.host.tokenizer, example.rationale, add_bos=False)) * 5 // 4 + 8

    def evaluate(self, n: int, seed: int = 0) -> dict[str, float]:
        """Greedy accuracy on n held-out problems of each split, with the in-context prefix if any."""
        return {split: self.accuracy(self.ctx.task.generate(split, n, seed)) for split in EVAL_SPLITS}

    def accuracy(self, examples: Sequence[Example], batch_size: int = 16) -> float:
        host, task = self.ctx.host, self.ctx.task
        if not examples:
            return math.nan
        correct = 0
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            prompts = [self.in_context(task.prompt(e.question), self.answer_budget(e)) for e in chunk]
            params = []
            for prompt, example in zip(prompts, chunk, strict=True):
                room = host.max_positions - len(encode(host.tokenizer, prompt))
                params.append(SamplingParams(max_new_tokens=max(1, min(self.answer_budget(example), room))))
            outputs = host.generate_sync(prompts, params)
            correct += sum(task.grade(e, out.text) for e, out in zip(chunk, outputs, strict=True))
        return correct / len(examples)

    def fits(self, prompt: str, budget: int) -> bool:
        """Whether the model's context holds the prompt and an answer of `budget` tokens."""
        return len(encode(self.ctx.host.tokenizer, prompt)) + budget <= self.ctx.host.max_positions

    async def sample(self, prompts: Sequence[str], budgets: Sequence[int], temperature: float, seed: int) -> list[str]:
        """The student's own continuations, seeded per prompt so a replay after a crash samples the same."""
        host = self.ctx.host
        params = []
        for index, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            room = host.max_positions - len(encode(host.tokenizer, prompt))
            params.append(
                SamplingParams(max_new_tokens=max(1, min(budget, room)), temperature=temperature, seed=seed + index)
            )
        outputs = []
        for start in range(0, len(params), SAMPLE_BATCH):
            end = start + SAMPLE_BATCH
            outputs += await host.run(host.generate_sync, list(prompts[start:end]), params[start:end])
        return [output.text if output.text.strip() else NO_ANSWER for output in outputs]


def apply_once(queue: Sequence[Tagged]) -> list[Tagged]:
    """The queue with each lesson only on the first example that uses it: data seen in several
    passes (or split into turns) applies its lessons with the first update that trains on them."""
    seen: set[str] = set()
    out = []
    for tagged in queue:
        fresh = tuple(lesson for lesson in tagged.lessons if lesson not in seen)
        seen.update(fresh)
        out.append(tagged if fresh == tagged.lessons else Tagged(tagged.example, fresh, tagged.kind))
    return out


def feedback_target(
    answer: str, rounds: Sequence[tuple[str, str]], final_feedback: str, weight: float, answer_weight: float = 1.0
) -> Segments:
    """TriPosT's improvement format as weighted segments: the first answer at `answer_weight`, then
    from the first "Feedback:" on (every "Feedback: … Updated Answer: …" round, and the closing
    feedback) at `weight`."""
    tail = "".join(f"{FEEDBACK} {feedback}\nUpdated Answer: {updated}\n" for feedback, updated in rounds)
    return [(answer.rstrip("\n") + "\n", answer_weight), (f"{tail}{FEEDBACK} {final_feedback}", weight)]
