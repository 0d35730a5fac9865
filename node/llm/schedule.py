"""The learning-rate schedule SFT, the student and the benchmarks share: linear warm-up to the
peak, then cosine decay to a floor at the last update (or constant after the warm-up).

The curve is transformers' own (`get_cosine_with_min_lr_schedule_with_warmup`,
`get_constant_schedule_with_warmup`, as HF's Trainer and TriPosT's reference use). A schedule
here is a pure function of the update number rather than a stateful LambdaLR, so that a run
resumed from a checkpoint, or a stage B continuing a stage A in another process, picks the curve
up exactly where it was, with nothing to save but the update count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

ScheduleKind = Literal["cosine", "constant"]
SCHEDULE_KINDS: tuple[ScheduleKind, ...] = ("cosine", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate by update: `lr(1)` is the first update's, `lr(total_steps)` the last's."""

    peak: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # the cosine's floor, as a fraction of the peak
    kind: ScheduleKind = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        if self.peak <= 0 or self.total_steps < 1 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                "a schedule needs a positive peak, at least one step, a non-negative warm-up and a floor ratio in "
                f"[0, 1]; got peak {self.peak}, {self.total_steps} steps, warm-up {self.warmup_steps}, "
                f"floor {self.min_lr_ratio}"
            )

    @cached_property
    def _factor(self) -> Callable[[int], float]:
        # transformers builds the curve around an optimizer; a throw-away one lends it its lambda.
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        if self.kind == "constant":
            scheduler = get_constant_schedule_with_warmup(probe, self.warmup_steps)
        else:
            scheduler = get_cosine_with_min_lr_schedule_with_warmup(
                probe, self.warmup_steps, self.total_steps, min_lr_rate=self.min_lr_ratio
            )
        factor: Callable[[int], float] = scheduler.lr_lambdas[0]
        return factor

    def lr(self, update: int) -> float:
        """The learning rate of update number `update` (1-based); past the end it stays at the end's."""
        return self.peak * float(self._factor(min(max(update, 1), self.total_steps)))

    def update_at(self, fraction: float) -> int:
        """The update a fraction of the schedule has reached (a clock-limited run jumps ahead by this)."""
        return max(1, min(self.total_steps, math.ceil(fraction * self.total_steps)))

    def apply(self, optimizer: torch.optim.Optimizer, update: int) -> float:
        """Set every parameter group's learning rate for this update; returns it."""
        lr = self.lr(update)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget AdamW's moments and step counts, as a new optimizer over the same weights would
    start (TriPosT's reference trains each iteration with a new Trainer, hence a new optimizer)."""
    optimizer.state.clear()
