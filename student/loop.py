"""The learning loop: resume, warm up, then update after update until `student.steps`.

    resume from the newest checkpoint (weights, optimizer, learner state), forget later updates
    warm up (SFT on gold rationales, under DP-SGD if asked) unless done
    evaluate on held-out seen / unseen problems: the "before" figures
    for each step:
        set the learning rate the run's schedule gives this update (an algorithm may set its own)
        the learner asks teachers (through the pool) and makes one update
        record which lessons the update applied first (provenance), export metrics
        at each evaluation step (every eval_every, or log-spaced): evaluate; every checkpoint_every: checkpoint
    evaluate and checkpoint at the end, and summarise

The loop owns the order of durable writes: provenance rows are written when an update is made,
checkpoints after; a crash between the two is undone on resume by `Provenance.rewind`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import Settings
from node.metrics import NodeMetrics
from node.privacy.ledger import PrivacyLedger
from student import checkpoints
from student.learner import Learner, StepResult
from student.provenance import Provenance, ProvenanceSummary
from student.teachers import PoolStats
from student.warmup import warm_up

log = logging.getLogger("agora.student")

StepHook = Callable[[int, int, StepResult], None]  # (step, steps in all, result): a progress bar's hook


def evaluation_steps(steps: int, eval_every: int, spacing: str = "linear") -> frozenset[int]:
    """The steps after which a run evaluates: every `eval_every`th, or (log) as many spaced evenly in
    log(step) from 1 to `steps` (the early ones, closer than one step apart, merge); the last
    step is evaluated in any case by the loop."""
    if spacing == "linear":
        return frozenset(range(eval_every, steps + 1, eval_every))
    count = max(2, math.ceil(steps / eval_every))
    return frozenset(round(math.exp(math.log(steps) * i / (count - 1))) for i in range(count))


@dataclass
class RunSummary:
    """What a run did, for the closing report."""

    algorithm: str
    task: str
    steps_done: int = 0
    resumed_from: int | None = None
    rewound_lessons: int = 0
    finished_early: bool = False
    seconds: float = 0.0
    last_loss: float | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    lessons: ProvenanceSummary | None = None
    pool: PoolStats | None = None
    epsilon_spent: float = 0.0


class StudentRun:
    """One student's learning run over its node's parts."""

    def __init__(
        self,
        settings: Settings,
        learner: Learner,
        provenance: Provenance,
        ledger: PrivacyLedger,
        metrics: NodeMetrics,
        root: Path,
        resumed: checkpoints.Checkpoint | None,
    ) -> None:
        self.settings, self.s = settings, settings.student
        self.learner, self.provenance, self.ledger, self.metrics = learner, provenance, ledger, metrics
        self.root = root  # where checkpoints go
        self.resumed = resumed
        self.step = 0
        self.warmed = False
        self.history: list[dict[str, float]] = []
        self.eval_steps = evaluation_steps(self.s.steps, self.s.eval_every, self.s.eval_spacing)

    @property
    def ctx(self) -> Any:
        return self.learner.ctx

    def state(self) -> dict[str, Any]:
        return {
            "algorithm": self.learner.name,
            "task": self.s.task,
            "warmed": self.warmed,
            "history": self.history,
            "learner": self.learner.state_dict(),
        }

    def _resume(self, summary: RunSummary) -> None:
        if self.resumed is None:
            summary.rewound_lessons = self.provenance.rewind(0)  # a crash before the first checkpoint
            return
        state = self.resumed.state()
        if state.get("algorithm") != self.learner.name or state.get("task") != self.s.task:
            raise ValueError(
                f"the checkpoint at {self.resumed.path} is {state.get('algorithm')} on {state.get('task')}, but this "
                f"student runs {self.learner.name} on {self.s.task}; use another node.data_dir to start afresh"
            )
        checkpoints.restore_optimizer(self.resumed, self.ctx.optimizer)
        self.learner.load_state_dict(state["learner"])
        self.learner.load_files(self.resumed.path)
        self.step, self.warmed = self.resumed.step, bool(state["warmed"])
        self.history = list(state.get("history", []))
        summary.resumed_from = self.step
        summary.rewound_lessons = self.provenance.rewind(self.step)
        self.ctx.teachers.hold(self.learner.pending_lessons())
        log.info(
            "resuming %s from the checkpoint of step %d (%s); %d lessons of lost updates will be replayed",
            self.learner.name,
            self.step,
            self.resumed.path,
            summary.rewound_lessons,
            extra={"event": "student_resumed", "step": self.step, "rewound": summary.rewound_lessons},
        )

    async def evaluate(self) -> dict[str, float]:
        host = self.ctx.host
        scores: dict[str, float] = await host.run(self.learner.evaluate, self.s.eval_n, self.s.seed)
        for split, value in scores.items():
            self.metrics.eval_accuracy.labels(task=self.s.task, split=split).set(value)
        self.history.append({"step": float(self.step), **scores})
        log.info(
            "step %d: accuracy %s",
            self.step,
            ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
            extra={"event": "student_eval", "step": self.step, **scores},
        )
        return scores

    def checkpoint(self) -> checkpoints.Checkpoint:
        return checkpoints.save(
            self.root, self.step, self.ctx.host, self.ctx.optimizer, self.state(), self.learner.save_files
        )

    async def run(
        self, on_step: StepHook | None = None, on_warmup: Callable[[int, int, float], None] | None = None
    ) -> RunSummary:
        summary = RunSummary(self.learner.name, self.s.task)
        started = time.monotonic()
        self._resume(summary)
        if not self.warmed:
            if self.s.warmup_steps or self.s.dp_epsilon is not None:
                summary.notes.append(
                    await warm_up(self.ctx, self.settings, self.ledger, on_warmup or (lambda *_: None))
                )
            self.warmed = True
            self.checkpoint()
        summary.before = self.history[0] if self.history else await self.evaluate()
        summary.before = {k: v for k, v in summary.before.items() if k != "step"}
        while self.step < self.s.steps:
            self.ctx.schedule.apply(self.ctx.optimizer, self.s.lr_schedule_start + self.step + 1)
            result = await self.learner.step(self.step + 1)
            if result is None:
                summary.finished_early = True
                log.info("%s has nothing more to learn after step %d", self.learner.name, self.step)
                break
            self.step += 1
            self.record(result)
            summary.last_loss = result.loss
            if on_step is not None:
                on_step(self.step, self.s.steps, result)
            if self.step in self.eval_steps:
                await self.evaluate()
            if self.step % self.s.checkpoint_every == 0:
                self.checkpoint()
        if not self.history or self.history[-1]["step"] != self.step:
            await self.evaluate()
        summary.after = {k: v for k, v in self.history[-1].items() if k != "step"}
        summary.checkpoint = self.checkpoint().path
        summary.steps_done = self.step
        summary.seconds = time.monotonic() - started
        summary.notes += self.ctx.log
        summary.lessons = self.provenance.summary()
        summary.pool = self.ctx.teachers.stats
        summary.epsilon_spent = self.ledger.spent
        return summary

    def record(self, result: StepResult) -> None:
        """Provenance first (durable), then the metrics of this update."""
        loss = None if result.loss is None or not math.isfinite(result.loss) else result.loss
        self.provenance.record_update(
            self.step, self.learner.name, loss, result.examples, set(result.applied), set(result.discarded)
        )
        self.ctx.teachers.released(set(result.applied) | set(result.discarded))
        self.metrics.train_steps.labels(algorithm=self.learner.name).inc()
        if loss is not None:
            self.metrics.train_loss.set(loss)
        log.debug(
            "step %d: loss %s on %d examples; %d lessons applied, %d set aside",
            self.step,
            "-" if loss is None else f"{loss:.4f}",
            result.examples,
            len(result.applied),
            len(result.discarded),
            extra={"event": "student_step", "step": self.step, "loss": loss, "applied": sorted(result.applied)},
        )
