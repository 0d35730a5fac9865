"""Supervised fine-tuning on a task's gold rationales, and accuracy by split.

This is how `agora model train` makes a competent tiny teacher: AdamW, linear warm-up then
cosine decay, batches drawn from a shuffled pool of training problems, and a held-out check
every `eval_every` steps. One loop, top to bottom, in the manner of nanoGPT.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from node.llm.host import ModelHost
from node.llm.sampling import SamplingParams
from node.llm.schedule import LRSchedule
from node.llm.tokenizer import encode
from node.llm.training import TrainingExample
from node.tasks.base import Example, Split, Task, gold_target

EVAL_SPLITS: tuple[Split, ...] = ("seen", "unseen")
T = TypeVar("T")


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 5e-3  # peak learning rate; tiny models from scratch like it high
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    warmup_steps: int = 50
    schedule_steps: int | None = None  # the schedule's length, when the run stops part-way through it (None: steps)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    pool_size: int = 8000  # distinct training problems drawn from the generator
    eval_every: int = 200  # steps between held-out checks (0 = only at the end)
    eval_n: int = 32  # problems per split in each check
    time_limit_s: float | None = None  # stop early (after a final check) once this much time has passed
    gold_feedback: bool = False  # end each gold rationale with the all-correct feedback (a TriPosT student's base)
    seed: int = 0

    def schedule(self) -> LRSchedule:
        """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the schedule's end."""
        return LRSchedule(self.lr, self.schedule_steps or self.steps, self.warmup_steps, self.min_lr_ratio)


@dataclass
class SFTReport:
    steps: int = 0
    seconds: float = 0.0
    last_loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)  # one row per check: step, loss, accuracies

    @property
    def final_accuracy(self) -> dict[str, float]:
        return {k: v for k, v in self.history[-1].items() if k in EVAL_SPLITS} if self.history else {}


def shuffled_batches(pool: list[T], batch_size: int, rng: random.Random) -> Iterator[list[T]]:
    """Batches over the pool without end, the pool reshuffled at the start of every epoch."""
    cursor = len(pool)
    while True:
        if cursor + batch_size > len(pool):
            rng.shuffle(pool)
            cursor = 0
        yield pool[cursor : cursor + batch_size]
        cursor += batch_size


def sft_example(task: Task, example: Example, feedback: bool = False) -> TrainingExample:
    """A gold example: the question's prompt, then its rationale (with the all-correct feedback)."""
    return TrainingExample(task.prompt(example.question), gold_target(example.rationale, feedback))


def accuracy(host: ModelHost, task: Task, examples: Sequence[Example], batch_size: int = 16) -> float:
    """Fraction of examples whose greedy answer grades correct."""
    if not examples:
        return float("nan")
    correct = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompts = [task.prompt(e.question) for e in chunk]
        params = []
        for prompt, example in zip(prompts, chunk, strict=True):
            # Room for the gold rationale and some slack, within the model's context.
            budget = len(encode(host.tokenizer, example.rationale, add_bos=False)) * 5 // 4 + 8
            room = host.max_positions - len(encode(host.tokenizer, prompt))
            params.append(SamplingParams(max_new_tokens=max(1, min(budget, room))))
        outputs = host.generate_sync(prompts, params)
        correct += sum(task.grade(e, out.text) for e, out in zip(chunk, outputs, strict=True))
    return correct / len(examples)


def evaluate(
    host: ModelHost, task: Task, splits: Sequence[Split] = EVAL_SPLITS, n: int = 100, seed: int = 0
) -> dict[str, float]:
    """Greedy accuracy on n problems of each split (the same problems for the same seed)."""
    return {split: accuracy(host, task, task.generate(split, n, seed)) for split in splits}


def train_sft(
    host: ModelHost,
    task: Task,
    config: SFTConfig,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Sequence[TrainingExample] = (),
) -> SFTReport:
    """Fine-tune host's model on gold rationales; returns the loss and accuracy history. Pass an
    optimizer to keep its state afterwards (a stage A whose schedule a stage B continues), and
    `extra` examples to shuffle into the gold pool (a benchmark's stage A with other formats)."""
    pool_size = min(config.pool_size, task.train_pool or config.pool_size)
    pool = [sft_example(task, e, config.gold_feedback) for e in task.generate("train", pool_size, config.seed)]
    pool += extra
    held_out = {split: task.generate(split, config.eval_n, config.seed) for split in EVAL_SPLITS}
    held_out_loss = [sft_example(task, e, config.gold_feedback) for e in held_out["seen"]]
    batches = shuffled_batches(pool, config.batch_size, random.Random(config.seed))
    optimizer = optimizer or host.make_optimizer(config.lr, config.weight_decay)
    schedule = config.schedule()
    report, started = SFTReport(), time.monotonic()

    def check(step: int) -> None:
        row = {"step": float(step), "train_loss": report.last_loss, "seen_loss": host.eval_loss(held_out_loss)}
        row |= {split: accuracy(host, task, examples) for split, examples in held_out.items()}
        report.history.append(row)
        if on_eval is not None:
            on_eval(row)

    for step in range(config.steps):
        batch = next(batches)
        update = step + 1
        if config.time_limit_s:  # a run stopped by the clock still finishes its decay
            update = max(update, schedule.update_at((time.monotonic() - started) / config.time_limit_s))
        schedule.apply(optimizer, update)
        report.last_loss = host.train_step(batch, optimizer, config.max_grad_norm)
        report.steps = step + 1
        if on_step is not None:
            on_step(report.steps, report.last_loss)
        out_of_time = config.time_limit_s is not None and time.monotonic() - started > config.time_limit_s
        if report.steps == config.steps or out_of_time:
            break
        if config.eval_every and report.steps % config.eval_every == 0:
            check(report.steps)
    check(report.steps)
    report.seconds = time.monotonic() - started
    return report
