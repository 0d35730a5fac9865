"""The shared learning-rate schedule: transformers' curves as a function of the update number."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from node.llm.schedule import LRSchedule, reset_optimizer


def test_warm_up_is_linear_then_cosine_reaches_the_floor_at_the_last_update() -> None:
    schedule = LRSchedule(1e-2, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert [schedule.lr(u) for u in (1, 5, 10)] == pytest.approx([1e-3, 5e-3, 1e-2])
    decay = [schedule.lr(u) for u in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(decay))  # never rises after the peak
    assert schedule.lr(55) == pytest.approx(1e-3 + 9e-3 * 0.5)  # half-way down the cosine
    assert schedule.lr(100) == pytest.approx(1e-3)
    assert schedule.lr(250) == pytest.approx(1e-3)  # past the end it stays at the floor (no second cosine)


def test_the_curve_is_the_one_a_stepped_transformers_scheduler_gives() -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([weight], lr=3e-3)
    stepped = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 7, 40, min_lr_rate=0.2)
    schedule = LRSchedule(3e-3, 40, 7, 0.2)
    for update in range(1, 41):
        optimizer.step()
        stepped.step()  # the rate HF's Trainer sets after its update-th optimizer step
        assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule.lr(update))


def test_constant_after_warm_up_and_apply_sets_every_group() -> None:
    schedule = LRSchedule(2e-3, 50, warmup_steps=4, kind="constant")
    assert [schedule.lr(u) for u in (1, 2, 4, 5, 50)] == pytest.approx([5e-4, 1e-3, 2e-3, 2e-3, 2e-3])
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups: list[dict[str, Any]] = [{"params": [a]}, {"params": [b], "lr": 9.0}]
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    assert schedule.apply(optimizer, 2) == pytest.approx(1e-3)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-3, 1e-3])


def test_a_second_stage_continues_the_curve_where_the_first_stopped() -> None:
    whole = LRSchedule(1e-2, 160, 5, 0.1)
    # Stage A made 120 updates; stage B's update k is the schedule's 120 + k (student.lr_schedule_start).
    assert [whole.lr(120 + k) for k in (1, 40)] == pytest.approx([whole.lr(121), 1e-3])
    assert whole.lr(121) < whole.lr(120) and not math.isclose(whole.lr(121), 1e-3)
    assert whole.update_at(0.5) == 80 and whole.update_at(2.0) == 160 and whole.update_at(0.0) == 1


def test_bad_schedules_are_sentences() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        LRSchedule(1e-3, 10, kind="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one step"):
        LRSchedule(1e-3, 0)
    with pytest.raises(ValueError, match="floor ratio"):
        LRSchedule(1e-3, 10, min_lr_ratio=1.5)


def test_reset_optimizer_forgets_adams_moments() -> None:
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        (weight**2).sum().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert float(optimizer.state[weight]["step"]) == 3
    reset_optimizer(optimizer)
    assert len(optimizer.state) == 0
    optimizer.zero_grad()
    (weight**2).sum().backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    assert float(optimizer.state[weight]["step"]) == 1  # a fresh start, as a new optimizer would make
