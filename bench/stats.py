"""Confidence intervals for the learning benchmarks: a hierarchical bootstrap over seeds and
problems, as the results of a few seeds graded on the same problems call for.

Each arm's results are a matrix `[seed, problem]` of 0/1 outcomes (or any per-problem numbers),
every seed graded on the same problems. A bootstrap draw resamples the seeds with replacement,
then the problems with replacement, and takes the mean; an interval is the 2.5th and 97.5th
percentiles of those draws. Differences between arms are paired: the same drawn seeds and
problems on both sides, so that problem difficulty, shared by both arms, cancels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

DRAWS = 2000
Matrix = NDArray[np.float64]  # [seed, problem]


def as_matrix(rows: list[list[float]] | list[str]) -> Matrix:
    """Per-seed outcomes, as lists of numbers or strings of 0/1 digits, into a [seed, problem] matrix."""
    parsed = [[float(c) for c in row] if isinstance(row, str) else [float(v) for v in row] for row in rows]
    if not parsed or len({len(row) for row in parsed}) != 1:
        raise ValueError("every seed must be graded on the same number of problems")
    return np.array(parsed, dtype=np.float64)


def _draws(shape: tuple[int, int], rng: np.random.Generator, draws: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    seeds, problems = shape
    return rng.integers(0, seeds, size=(draws, seeds)), rng.integers(0, problems, size=(draws, problems))


def bootstrap(
    statistic: Callable[[Matrix], float], matrix: Matrix, draws: int = DRAWS, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """The statistic of the matrix and its 95% interval over seeds and problems."""
    rng = np.random.default_rng(seed)
    seed_idx, problem_idx = _draws(matrix.shape, rng, draws)
    values = [statistic(matrix[s][:, p]) for s, p in zip(seed_idx, problem_idx, strict=True)]
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return statistic(matrix), (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return statistic(matrix), (float(low), float(high))


def mean_ci(matrix: Matrix, draws: int = DRAWS, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """The mean over seeds and problems, with its 95% interval."""
    return bootstrap(lambda m: float(m.mean()), matrix, draws, seed)


def ratio_ci(
    numerator: Matrix, denominator: Matrix, draws: int = DRAWS, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """sum(numerator) / sum(denominator) (e.g. fixed / wrong at first), paired draws, with its interval."""
    stacked = np.stack([numerator, denominator])
    rng = np.random.default_rng(seed)
    seed_idx, problem_idx = _draws(numerator.shape, rng, draws)

    def value(n: Matrix, d: Matrix) -> float:
        total = float(d.sum())
        return float(n.sum()) / total if total else float("nan")

    draws_ = [value(*stacked[:, s][:, :, p]) for s, p in zip(seed_idx, problem_idx, strict=True)]
    finite = [v for v in draws_ if np.isfinite(v)]
    point = value(numerator, denominator)
    if not finite:
        return point, (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return point, (float(low), float(high))


def difference_ci(a: Matrix, b: Matrix, draws: int = DRAWS, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """mean(a) - mean(b) with a paired 95% interval (seed i of a beside seed i of b, same problems)."""
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds and problems, not {a.shape} and {b.shape}")
    return mean_ci(a - b, draws, seed)


def excludes_zero(interval: tuple[float, float]) -> bool:
    low, high = interval
    return bool(low > 0 or high < 0)
