"""What every task is: a seeded generator, gold rationales, a step verifier and a grader.

A rationale is a list of lines, each opening with a step label: ``(1)``, ``(3.2)`` …, and a last
line ``(Final response) So the answer is X.`` (TriPosT's scripted format). The verifier walks the
lines in order and reports the first wrong one with a reason sentence; a teacher's ``Critique``
and a TriPosT student build their feedback and improvements from that verdict.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Split = Literal["train", "seen", "unseen"]
SPLITS: tuple[Split, ...] = ("train", "seen", "unseen")
TokenizerLevel = Literal["char", "word"]

FINAL_LABEL = "(Final response)"
FEEDBACK = "Feedback:"  # TriPosT's marker of a verdict on the answer before it
ALL_CORRECT = "Every step is correct. The final response is also correct."  # the verdict on a right answer
POOL_SEED = 0  # a training pool is the first N questions the generator draws with this seed
ANSWER_PATTERN = re.compile(r"[Tt]he answer is:?\s*(.+?)\.?\s*$", re.MULTILINE)
STEP_LABEL = re.compile(r"^(\((?:\d+(?:\.\d+)*|Final response)\))")


class TaskError(ValueError):
    """A task that cannot be built or used; the message says why (bad option, bad data file)."""


@dataclass(frozen=True)
class Example:
    """One problem with its gold rationale."""

    question: str  # what the model is asked, e.g. "Q: ((1 + 2) * 3) ="
    rationale: str  # gold step-by-step answer, lines with step labels, last line the final response
    answer: str  # canonical final answer, as the grader compares it
    split: Split
    meta: Mapping[str, object] = field(default_factory=dict)  # JSON-able facts: depth, length …


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one rationale."""

    correct: bool
    step: str | None = None  # label of the first wrong step, e.g. "(6)", "(3.1)", "(Final response)"
    line: int | None = None  # index of that step's line in the rationale (0-based)
    segment: str | None = None  # the wrong part of the line, quoted in feedback
    reason: str = "Every step and the final response are correct."  # one sentence

    @property
    def feedback(self) -> str:
        """TriPosT's feedback sentence for this verdict."""
        if self.correct:
            return ALL_CORRECT
        if not self.segment:  # nothing to quote (a missing step): the reason says it all
            return self.reason
        where = f"In step {self.step}" if self.step else "In the answer"
        return f'{where} the part "{self.segment}" is incorrect. {self.reason}'


# What interactive learning writes around a task's own text (TriPosT's and YODA's feedback
# rounds, teachers' instructions): a tiny model's tokenizer learns these too, and at char level
# every printable ASCII character, so that no lesson turns into <unk>.
INTERACTION_TEXTS: tuple[str, ...] = (
    f"{FEEDBACK} {ALL_CORRECT}",
    "Updated Answer: Refined Answer: Input: Output: Instruction:",
    string.printable.strip() + " ",
)


def final_response(answer: str) -> str:
    """The last line of a gold rationale: ``(Final response) So the answer is X.``"""
    return f"{FINAL_LABEL} So the answer is {answer}."


def gold_target(rationale: str, feedback: bool) -> str:
    """A gold rationale as a student learns it: with `feedback`, followed by the all-correct
    verdict, as TriPosT's reference ends (and trains on) every gold example, so that a student
    learns to judge its own answer after writing it."""
    return f"{rationale}\n{FEEDBACK} {ALL_CORRECT}" if feedback else rationale


def step_label(line: str) -> str | None:
    """The step label a rationale line opens with, or None."""
    match = STEP_LABEL.match(line)
    return match.group(1) if match else None


def held_out(question: str, fraction: float = 0.1) -> bool:
    """Deterministic train/seen-test partition of in-distribution questions (never both)."""
    digest = hashlib.sha256(question.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class Task(ABC):
    """A task with verifiable answers. Subclasses set the class attributes and fill the methods."""

    name: ClassVar[str]  # registry key, e.g. "arithmetic"
    summary: ClassVar[str]  # one sentence for `agora task list` and docs
    tokenizer_level: ClassVar[TokenizerLevel] = "char"  # how a tiny model's tokenizer splits text
    options: ClassVar[tuple[str, ...]] = ()  # keyword arguments `get_task("name:key=v,v")` may set
    train_pool: int | None = None  # training questions are drawn from this many fixed ones (None: no end)
    _pool: list[Example] | None = None

    def generate(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """n distinct examples of a split; the same (split, n, seed) always gives the same list.
        With a training pool (the `train_pool=N` task option), training examples are a seeded
        sample of N fixed questions, so that more training cannot mean more new data."""
        if split != "train" or self.train_pool is None:
            return self.draw(split, n, seed)
        if self._pool is None:
            self._pool = self.draw("train", self.train_pool, POOL_SEED)
        if n > len(self._pool):
            raise TaskError(f"{n} training examples were asked for, but the training pool holds {len(self._pool)}.")
        return random.Random(f"{self.name}:pool:{seed}").sample(self._pool, n)

    def at_most(self, split: Split, n: int) -> int:
        """n, or fewer where a split has fewer distinct examples (a finite training pool)."""
        return min(n, self.train_pool) if split == "train" and self.train_pool is not None else n

    @abstractmethod
    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """The task's own generator: n distinct examples of a split, the same for the same arguments."""

    @abstractmethod
    def verify(self, example: Example, rationale: str) -> Verdict:
        """Check a rationale step by step against the example; the first wrong step wins."""

    def extract_answer(self, text: str) -> str | None:
        """The last "the answer is X" in a model's output, or None."""
        matches = ANSWER_PATTERN.findall(text)
        return matches[-1].strip() if matches else None

    def grade(self, example: Example, output: str) -> bool:
        """Whether the output's final answer is the example's answer (exact match)."""
        return self.extract_answer(output) == example.answer

    def prompt(self, question: str) -> str:
        """The text a model is conditioned on before it writes its rationale."""
        return f"{question}\nAnswer: "

    def solve(self, question: str) -> Example | None:
        """The example (gold rationale and answer) of any question of this task, or None when the
        task cannot work one out from the question alone (its answers are data, not computed)."""
        return None

    def pose(self, question: str, n_generalized: int, n_harder: int, seed: int = 0) -> list[tuple[str, int]] | None:
        """YODA questions built from a basic one: n_generalized variants of the same shape (level 0)
        then one harder question per level 1..n_harder; None when the task cannot build them."""
        return None

    def improve(self, example: Example, rationale: str, verdict: Verdict) -> str:
        """An improved rationale: the attempt's correct prefix, then the gold steps from the wrong one on."""
        if verdict.correct:
            return rationale
        kept = rationale.splitlines()[: verdict.line or 0]
        gold = example.rationale.splitlines()
        return "\n".join(kept + gold[len(kept) :])

    def corpus(self, seed: int = 0, n_per_split: int = 200) -> list[str]:
        """Texts covering every symbol the task uses: what a tiny model's tokenizer is trained on."""
        return [
            self.prompt(example.question) + example.rationale
            for split in SPLITS
            for example in self.generate(split, self.at_most(split, n_per_split), seed)
        ]
