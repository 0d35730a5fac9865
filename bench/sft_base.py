"""Stage A of the learning benchmarks: a tiny char-level Llama trained from scratch by SFT on a
task's gold data, once, and reused from bench/.cache/ (keyed by its plan).

A plan may stop part-way through its learning-rate schedule (`schedule_steps` > `steps`); the
model is then saved with its AdamW state (optimizer.safetensors) so that stage B continues the
same schedule with the same optimizer (`student.optimizer_state: from_model`,
`student.lr_schedule_start`), equal in every arm.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node.llm import ModelHost, TinySpec, resolve_placement
from node.llm.sft import SFTConfig, train_sft
from node.llm.training import TrainingExample
from node.tasks import Example, Task, get_task
from node.tasks.base import ALL_CORRECT
from student.checkpoints import save_model_optimizer
from student.learner import feedback_target
from student.tripost import corrupt

SHAPE = TinySpec(layers=2, dim=128, heads=4, max_positions=768)  # 0.4M parameters: fast enough to learn on 2 cores
STAMP = "base.json"
CACHE = Path(__file__).parent / ".cache"  # git-ignored

Say = Callable[[str], None]


@dataclass(frozen=True)
class BasePlan:
    """The SFT-on-gold student every arm starts from."""

    task: str
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    schedule_steps: int | None = None  # the whole schedule, when stage B continues it (None: steps)
    gold_feedback: bool = False  # gold rationales end with the all-correct feedback (a TriPosT student's base)
    seed: int = 0
    # Improvement-format examples (a corrupted gold attempt as context, then the verifier's feedback
    # and the corrected answer), as a share of the gold pool: a stage A that has seen what a critique
    # looks like (0: gold only, the stage A).
    improvement_share: float = 0.0

    def identity(self) -> dict[str, Any]:
        """What names the cached model: the plan, without improvement_share at its default, so
        that stage A caches made before the field existed stay valid."""
        plan = asdict(self)
        if not self.improvement_share:
            del plan["improvement_share"]
        return plan

    def sft_config(self) -> SFTConfig:
        return SFTConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
            schedule_steps=self.schedule_steps,
            gold_feedback=self.gold_feedback,
            eval_every=0,
            eval_n=8,
            seed=self.seed,
        )


def base_model(plan: BasePlan, cache: Path = CACHE, say: Say = print) -> tuple[Path, dict[str, Any]]:
    """Train stage A, or reuse the one an earlier run made by the same plan; its directory and its
    training figures."""
    tag = hashlib.sha256(json.dumps(plan.identity(), sort_keys=True).encode()).hexdigest()[:8]
    directory = cache / f"{get_task(plan.task).name}-{tag}-{plan.steps}x{plan.batch_size}-seed{plan.seed}"
    stamp = directory / STAMP
    if stamp.exists() and json.loads(stamp.read_text())["plan"] == plan.identity():
        say(f"reusing the SFT base in {directory}")
        return directory, json.loads(stamp.read_text())
    task = get_task(plan.task)
    host = ModelHost.build(task, SHAPE, resolve_placement("auto", "auto"), seed=plan.seed)
    optimizer = host.make_optimizer(plan.lr)
    started = time.monotonic()

    def progress(step: int, loss: float) -> None:
        if step % 200 == 0 or step == plan.steps:
            say(f"  base SFT step {step}/{plan.steps}, loss {loss:.3f}, {time.monotonic() - started:.0f} s")

    size = f"{host.parameter_count / 1e6:.2f}M parameters"
    of = f" of a {plan.schedule_steps}-step schedule" if plan.schedule_steps else ""
    say(f"SFT on gold rationales: {plan.steps} steps of {plan.batch_size}{of}, {size}")
    config = plan.sft_config()
    extra = improvement_examples(task, round(plan.improvement_share * config.pool_size), plan.seed)
    if extra:
        say(f"  with {len(extra)} improvement-format examples shuffled in")
    report = train_sft(host, task, config, on_step=progress, optimizer=optimizer, extra=extra)
    host.save(directory)
    save_model_optimizer(directory, optimizer)
    figures = {
        "plan": plan.identity(),
        "parameters": host.parameter_count,
        "seconds": report.seconds,
        "final_loss": report.last_loss,
        "last_lr": optimizer.param_groups[0]["lr"],
        "accuracy": report.final_accuracy,
    }
    stamp.write_text(json.dumps(figures, indent=2) + "\n")
    host.close()
    return directory, figures


def corrected(task: Task, example: Example, rng: random.Random) -> tuple[str, list[tuple[str, str]]] | None:
    """A wrong attempt made from a gold rationale (E1's synthetic corruption) and the one critique
    round the task's verifier gives it (feedback, corrected answer), as E1's critic writes them;
    None when the corruption is still right."""
    attempt = corrupt(example.rationale, rng)
    verdict = task.verify(example, attempt)
    if verdict.correct:
        return None
    return attempt, [(verdict.feedback, task.improve(example, attempt, verdict))]


def improvement_examples(task: Task, n: int, seed: int) -> list[TrainingExample]:
    """n TriPosT improvement examples from gold: a corrupted rationale (context, weight 0), the
    task verifier's feedback on it and the corrected answer (weight 1)."""
    rng = random.Random(f"improvement:{seed}")
    made: list[TrainingExample] = []
    for example in task.generate("train", task.at_most("train", 2 * n), seed + 1) if n else []:
        pair = corrected(task, example, rng)
        if pair is None:
            continue
        attempt, rounds = pair
        made.append(
            TrainingExample(task.prompt(example.question), feedback_target(attempt, rounds, ALL_CORRECT, 1.0, 0.0))
        )
        if len(made) == n:
            break
    return made
