"""The learning benchmarks' intervals (bench/stats.py) and held-out halves (bench/arith_common.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.arith_common import _own_verdict, held_out
from bench.stats import as_matrix, difference_ci, excludes_zero, mean_ci, ratio_ci
from node.tasks.base import ALL_CORRECT, FEEDBACK


def test_the_interval_of_a_mean_holds_the_truth_and_narrows_with_more_problems() -> None:
    rng = np.random.default_rng(1)
    few = (rng.random((3, 50)) < 0.3).astype(float)
    many = (rng.random((3, 2000)) < 0.3).astype(float)
    value, (low, high) = mean_ci(many)
    assert low <= 0.3 <= high and low <= value <= high
    _, (few_low, few_high) = mean_ci(few)
    assert few_high - few_low > high - low


def test_seed_to_seed_spread_widens_the_interval() -> None:
    """Seeds that disagree (a seed effect) must widen the interval beyond problem noise alone."""
    rng = np.random.default_rng(2)
    alike = (rng.random((3, 500)) < 0.5).astype(float)
    apart = np.stack([(rng.random(500) < p).astype(float) for p in (0.3, 0.5, 0.7)])
    _, (a_low, a_high) = mean_ci(alike)
    _, (b_low, b_high) = mean_ci(apart)
    assert b_high - b_low > 2 * (a_high - a_low)


def test_a_paired_difference_sees_a_small_effect_that_problem_difficulty_would_hide() -> None:
    rng = np.random.default_rng(3)
    difficulty = rng.random(1000)
    base = (difficulty[None, :].repeat(3, 0) < 0.5).astype(float)
    better = base.copy()
    better[:, :40] = 1.0  # 40 more problems right, for every seed
    value, interval = difference_ci(better, base)
    assert value == pytest.approx(float((better - base).mean()))
    assert excludes_zero(interval) and interval[0] > 0
    _, same = difference_ci(base, base)
    assert not excludes_zero(same)
    with pytest.raises(ValueError, match="same seeds and problems"):
        difference_ci(base, base[:, :10])


def test_a_ratio_is_over_its_own_denominator_and_empty_is_not_a_number() -> None:
    wrong_first = as_matrix(["1100", "1010"])
    fixed = as_matrix(["1000", "0010"])
    value, (low, high) = ratio_ci(fixed, wrong_first)
    assert value == pytest.approx(0.5) and 0 <= low <= value <= high <= 1
    none, _ = ratio_ci(fixed * 0, wrong_first * 0)
    assert math.isnan(none)
    with pytest.raises(ValueError, match="same number of problems"):
        as_matrix(["101", "10"])


def test_test_and_validation_problems_never_share_a_question() -> None:
    test = held_out({"seen": 200, "unseen": 100}, "test")
    validation = held_out({"seen": 200, "unseen": 100}, "validation")
    for split in ("seen", "unseen"):
        assert len(test[split]) == len(validation[split])
        assert not {e.question for e in test[split]} & {e.question for e in validation[split]}
    assert held_out({"seen": 20}, "test") == {"seen": test["seen"][:20]}  # the same problems every time


def test_a_models_own_verdict_is_read_from_its_first_feedback_line() -> None:
    attempt = "(1) Let's calculate (2 + 3) = 5.\n(Final response) So the answer is 5."
    assert _own_verdict(attempt) == (False, False)
    assert _own_verdict(f"{attempt}\n{FEEDBACK} {ALL_CORRECT}") == (True, True)
    assert _own_verdict(f"{attempt}\n{FEEDBACK} In step (1) the part (2 + 3) = 5 is incorrect.\nUpdated") == (
        True,
        False,
    )
