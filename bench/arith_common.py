"""What E1 (TriPosT-mini) and E2 (YODA-mini) share: the arithmetic they learn, their test and
validation problems, and how a finished model is graded, problem by problem.

The task is a small arithmetic, so that a tiny model learns some of it on 2 CPU cores in
minutes: one flat expression of 2 or 3 single-digit operands in training (e.g. "(2 + 3 * 4)"),
4 operands unseen (one operand longer, as TriPosT's unseen split is longer), and a finite pool
of training questions (`train_pool`), so that more SFT cannot mean more new data. Teacher and
students name it with the same task string.

Held-out problems come in two disjoint halves: the **test** problems the results report, and
the **validation** problems hyperparameters are chosen on (`--validation`); a benchmark tuning
itself never reads its test problems.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import Half
from bench.sft_base import BasePlan
from bench.stats import Matrix, as_matrix, difference_ci, mean_ci, ratio_ci
from node.llm import ModelHost, resolve_placement
from node.llm.sampling import SamplingParams
from node.llm.tokenizer import encode
from node.tasks import Example, Split, get_task
from node.tasks.base import ALL_CORRECT, FEEDBACK
from student import checkpoints

POOL = 16000  # distinct training questions (of about 57,000 the options allow)
TASK = f"arithmetic:lengths=2,3:depths=1:unseen_lengths=4:unseen_depths=1:train_pool={POOL}"
GRADE_BATCH = 128


@dataclass(frozen=True)
class Stages:
    """Stage A, shared by E1 and E2 (cached), and the schedule every stage-B arm continues."""

    stage_a: int  # stage A's updates
    stage_b: int  # stage B's updates, in every arm: the rest of the schedule
    batch_size: int  # stage A's batch
    lr: float = 3e-3  # the schedule's peak
    warmup: int = 50
    improvement_share: float = 0.0  # stage A's improvement-format examples (bench/sft_base.py; 0: gold only)

    def base(self) -> BasePlan:
        return BasePlan(
            TASK,
            steps=self.stage_a,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup,
            schedule_steps=self.stage_a + self.stage_b,
            gold_feedback=True,
            improvement_share=self.improvement_share,
        )

    def continued(self, seed: int, batch_size: int) -> dict[str, Any]:
        """student.* settings that continue stage A's schedule and optimizer for stage B's updates."""
        return {
            "seed": seed,
            "steps": self.stage_b,
            "batch_size": batch_size,
            "lr": self.lr,
            "lr_schedule": "cosine",
            "lr_warmup_steps": self.warmup,
            "lr_schedule_start": self.stage_a,
            "lr_schedule_steps": self.stage_a + self.stage_b,
            "optimizer_state": "from_model",
            "eval_n": 8,  # the students' own evaluations are a progress signal; grading is separate
        }


STAGES = Stages(3000, 240, 16)
QUICK_STAGES = Stages(120, 12, 16, warmup=10)


def _half(question: str) -> Half:
    """Which half of the held-out problems a question belongs to (a hash, the same everywhere)."""
    return "validation" if hashlib.sha256(f"half:{question}".encode()).digest()[0] & 1 else "test"


def held_out(n: Mapping[Split, int], half: Half = "test", seed: int = 12345) -> dict[Split, list[Example]]:
    """n problems of each held-out split, all from one half: test and validation never share one."""
    task = get_task(TASK)
    chosen: dict[Split, list[Example]] = {}
    for split, count in n.items():
        drawn = task.generate(split, 3 * count + 200, seed)
        mine = [e for e in drawn if _half(e.question) == half]
        if len(mine) < count:
            raise ValueError(f"only {len(mine)} {half} problems of {split} were drawn; ask for fewer")
        chosen[split] = mine[:count]
    return chosen


@dataclass(frozen=True)
class Graded:
    """One model's outcomes on one split, problem by problem (strings of 0/1, one digit a problem)."""

    first: str  # the first attempt (the text before the first "Feedback:") is right
    final: str  # the last "the answer is X" is right
    judged_right: str  # the model's own first feedback says its attempt is all correct
    has_feedback: str  # the model wrote any feedback after its attempt

    def to_json(self) -> dict[str, str]:
        return {
            "first": self.first,
            "final": self.final,
            "judged_right": self.judged_right,
            "has_feedback": self.has_feedback,
        }


def _own_verdict(text: str) -> tuple[bool, bool]:
    """(wrote feedback, the feedback says all correct) of a model's output."""
    marker = f"\n{FEEDBACK}"
    if marker not in text:
        return False, False
    verdict = text.split(marker, 1)[1].split("\n", 1)[0].strip()
    return True, verdict == ALL_CORRECT


def grade(model: Path, splits: Mapping[Split, Sequence[Example]], chains: bool) -> dict[str, Graded]:
    """Greedy answers of a model on each split. With `chains` the model may write attempt ->
    feedback -> updated answer (TriPosT's inference, room for 3 answers)."""
    task = get_task(TASK)
    host = ModelHost.load(model, resolve_placement("auto", "auto"))
    graded: dict[str, Graded] = {}
    with torch.inference_mode():
        for split, examples in splits.items():
            rows: list[tuple[bool, bool, bool, bool]] = []
            for start in range(0, len(examples), GRADE_BATCH):
                chunk = examples[start : start + GRADE_BATCH]
                prompts = [task.prompt(e.question) for e in chunk]
                params = []
                for prompt, example in zip(prompts, chunk, strict=True):
                    budget = len(encode(host.tokenizer, example.rationale, add_bos=False)) * 5 // 4 + 8
                    budget += 24  # room for the feedback line after a single answer
                    room = host.max_positions - len(encode(host.tokenizer, prompt))
                    params.append(SamplingParams(max_new_tokens=max(1, min(budget * (3 if chains else 1), room))))
                for example, output in zip(chunk, host.generate_sync(prompts, params), strict=True):
                    wrote, says_right = _own_verdict(output.text)
                    first = task.grade(example, output.text.split(f"\n{FEEDBACK}")[0])
                    rows.append((first, task.grade(example, output.text), says_right, wrote))
            digits = ["".join(str(int(row[i])) for row in rows) for i in range(4)]
            graded[split] = Graded(*digits)
    host.close()
    return graded


def figures(runs: Sequence[Mapping[str, Any]], split: str) -> dict[str, Any]:
    """An arm's figures on a split over its seeds, each with a 95% bootstrap interval over seeds and problems."""
    first = as_matrix([r[split]["first"] for r in runs])
    final = as_matrix([r[split]["final"] for r in runs])
    judged = as_matrix([r[split]["judged_right"] for r in runs])
    wrote = as_matrix([r[split]["has_feedback"] for r in runs])
    wrong_first = 1.0 - first
    rows = {
        "accuracy": mean_ci(final),
        "first_attempt": mean_ci(first),
        "self_correction_rate": ratio_ci(wrong_first * final, wrong_first),  # wrong at first, right at last
        "right_to_wrong_rate": ratio_ci(first * (1.0 - final), first),  # right at first, wrong at last
        "feedback_accuracy": mean_ci(((judged == first) & (wrote == 1)).astype(float)),  # its verdict is true
        "flags_own_errors": ratio_ci(wrong_first * wrote * (1.0 - judged), wrong_first),  # says wrong when wrong
        "writes_feedback": mean_ci(wrote),
    }
    return {name: {"value": value, "ci95": list(ci)} for name, (value, ci) in rows.items()} | {"n": int(final.shape[1])}


def final_matrix(runs: Sequence[Mapping[str, Any]], split: str) -> Matrix:
    return as_matrix([r[split]["final"] for r in runs])


def gain(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], split: str
) -> tuple[float, tuple[float, float]]:
    """Final accuracy of arm a minus arm b on a split, in points, with its paired 95% interval."""
    value, (low, high) = difference_ci(final_matrix(a, split), final_matrix(b, split))
    return 100 * value, (100 * low, 100 * high)


def final_model(out: Path, name: str) -> Path:
    """The model a simulated student node saved last."""
    latest = checkpoints.latest(out / "nodes" / name / "student")
    if latest is None:
        raise RuntimeError(f"student {name} left no checkpoint in {out}")
    return latest.model_dir


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def pct_ci(figure: Mapping[str, Any]) -> str:
    low, high = figure["ci95"]
    return f"{100 * figure['value']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
