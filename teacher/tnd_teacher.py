"""TnD's teacher (Ma, Wang, Chai 2024): a causal LM trained from scratch on child-directed speech,
keeping log-spaced checkpoints for the age predictor R_phi (teacher/age_predictor.py).

The teacher learns the word-learning corpus (node/tasks/word_learning.py) by plain causal language
modelling: every sentence is a training example with an empty prompt, so its first word is
predicted from BOS alone, every later word from its left context, and EOS after the last one.
AdamW with linear warm-up and cosine decay (node.llm.schedule) over batches drawn from a
shuffled pool of sentences; one loop, top to bottom, in the manner of nanoGPT.

Why log-spaced checkpoints: R_phi learns to tell a text's "age" (log2 of the training step of the
checkpoint that wrote it), and a model changes fastest early on. Steps kept: 2, 4, 6, 8, 10, 20,
40, 60, 80, 100, 200, 400, ... (2, 4, 6 and 8 times 10^k, then 10^(k+1), for k = 0, 1, 2, ...) up
to the last step, plus the last step itself (see `checkpoint_schedule`). Layout of OUT:

    OUT/checkpoints/step-000002/ ...  one ModelHost checkpoint per kept step, each written atomically
    OUT/final/                        the last step's model: point `model.source` here and the node's
                                      Demonstrate serves the final teacher's continuations
    OUT/teacher.json                  settings, checkpoints (step, train and held-out loss), per-step losses
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.llm.placement import resolve_placement
from node.llm.schedule import LRSchedule
from node.llm.sft import shuffled_batches
from node.llm.training import clm_example
from node.tasks.word_learning import WordLearningTask

TASK = "word_learning"
TEACHER_FILE = "teacher.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
_STEP_DIR = re.compile(r"^step-(\d+)$")
DEFAULT_SPEC = TinySpec(layers=4, dim=128, heads=4)  # ~0.8M parameters with the ~300-word vocabulary


@dataclass(frozen=True)
class TeacherTrainConfig:
    """How to train the teacher; every default is sized for a CPU run of a few minutes."""

    steps: int = 2000  # optimizer steps; checkpoints follow the log-spaced schedule up to this
    batch_size: int = 32  # sentences per step
    lr: float = 3e-3  # peak learning rate; tiny models from scratch like it high
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    warmup_steps: int = 100  # linear warm-up, capped at a tenth of the run
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    corpus: int = 20_000  # sentences drawn from the word-learning generator (train split)
    sentences_per_text: int = 1  # sentences per training text (the students' tnd_sentences_per_text)
    held_out: int = 128  # held-out sentences (seen split) whose loss is measured at every checkpoint
    spec: TinySpec = DEFAULT_SPEC  # the new model's shape (Llama family)
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # weights dtype; AdamW from scratch wants float32
    seed: int = 0  # corpus, data order and initial weights
    # The teacher's private sentences (e.g. a planted canary for a Secret Sharer audit), each added
    # to the corpus `private_repeats` times: rare text a model memorizes only when it recurs.
    private: tuple[str, ...] = ()
    private_repeats: int = 20

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "corpus", "held_out", "sentences_per_text"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        if self.private_repeats < 0:
            raise ValueError(f"private_repeats must not be negative, got {self.private_repeats}")


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    path: Path
    train_loss: float  # loss of the step's batch, before its update
    held_out_loss: float  # mean loss on the held-out sentences after the step


@dataclass
class TeacherTrainReport:
    out: Path
    steps: int = 0
    seconds: float = 0.0
    parameters: int = 0
    losses: list[float] = field(default_factory=list)  # training loss of every step, in order
    checkpoints: list[CheckpointRecord] = field(default_factory=list)

    @property
    def final(self) -> Path:
        return self.out / FINAL_DIR

    def to_json(self, config: TeacherTrainConfig) -> dict[str, Any]:
        return {
            "task": TASK,
            "config": {**asdict(config), "spec": asdict(config.spec)},
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "parameters": self.parameters,
            "schedule": "steps 2, 4, 6, 8 x 10^k and 10^(k+1) up to the last step, plus the last step",
            "checkpoints": [
                {
                    "step": c.step,
                    "path": str(c.path.relative_to(self.out)),
                    "train_loss": c.train_loss,
                    "held_out_loss": c.held_out_loss,
                }
                for c in self.checkpoints
            ],
            "final": FINAL_DIR,
            "losses": self.losses,
        }


def checkpoint_schedule(last: int) -> list[int]:
    """The kept steps: 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, ... up to `last`, and `last` itself."""
    steps: list[int] = []
    scale = 1
    while 2 * scale <= last:
        steps += [m * scale for m in (2, 4, 6, 8, 10) if m * scale <= last]
        scale *= 10
    return sorted({*steps, last}) if last >= 1 else []


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS_DIR / f"step-{step:06d}"


def teacher_checkpoints(teacher_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every checkpoint under teacher_dir/checkpoints, by step; ValueError if none."""
    root = teacher_dir / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / "config.json").is_file():
                found.append((int(match.group(1)), path))
    if not found:
        raise ValueError(f"{teacher_dir} holds no teacher checkpoints (no {CHECKPOINTS_DIR}/step-NNNNNN/ directories)")
    return sorted(found)


def _clear(out: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; with overwrite, remove the old run's files."""
    old = [out / CHECKPOINTS_DIR, out / FINAL_DIR, out / TEACHER_FILE]
    if any(path.exists() for path in old):
        if not overwrite:
            raise ValueError(f"{out} already holds a teacher run; overwrite it explicitly (--force)")
        for path in old:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(staging, path)


def train_teacher(
    out: Path,
    config: TeacherTrainConfig,
    on_step: Callable[[int, float], None] | None = None,
    overwrite: bool = False,
) -> TeacherTrainReport:
    """Build a new tiny Llama for the word-learning corpus and train it by CLM, keeping log-spaced checkpoints."""
    out = out.expanduser().resolve()
    _clear(out, overwrite)
    task = WordLearningTask()
    host = ModelHost.build(task, config.spec, resolve_placement(config.device, config.dtype), seed=config.seed)
    k = config.sentences_per_text
    pool = [clm_example(text) for text in task.texts(max(1, config.corpus // k), config.seed, k)]
    pool += [clm_example(s) for s in config.private for _ in range(config.private_repeats)]
    held_out = [clm_example(text) for text in task.texts(config.held_out, config.seed, k, split="seen")]
    keep = set(checkpoint_schedule(config.steps))
    schedule = LRSchedule(
        config.lr,
        config.steps,
        warmup_steps=max(1, min(config.warmup_steps, config.steps // 10)),
        min_lr_ratio=config.min_lr_ratio,
    )
    optimizer = host.make_optimizer(config.lr, config.weight_decay)
    batches = shuffled_batches(pool, config.batch_size, random.Random(config.seed))
    report = TeacherTrainReport(out, parameters=host.parameter_count)
    started = time.monotonic()

    for step in range(1, config.steps + 1):
        batch = next(batches)
        schedule.apply(optimizer, step)
        loss = host.train_step(batch, optimizer, config.max_grad_norm)
        report.losses.append(loss)
        report.steps = step
        if on_step is not None:
            on_step(step, loss)
        if step in keep:
            held = host.eval_loss(held_out)
            path = host.save(checkpoint_dir(out, step), tnd_teacher={"step": step, "held_out_loss": held})
            report.checkpoints.append(CheckpointRecord(step, path, loss, held))

    host.save(
        out / FINAL_DIR, tnd_teacher={"step": report.steps, "held_out_loss": report.checkpoints[-1].held_out_loss}
    )
    host.close()
    report.seconds = time.monotonic() - started
    _write_json(out / TEACHER_FILE, report.to_json(config))
    return report
