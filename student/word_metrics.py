"""Per-word learning metrics of TnD's word-learning study: surprisal, learning curves, nAoA.

TnD (Ma, Wang & Chai 2024, "Babysit A Language Model From Scratch", arXiv 2405.13828) measures word
learning as Chang & Bergen (2022, "Word Acquisition in Neural Language Models", TACL) do:

- surprisal(w) at a step: the mean, over contexts c whose next word is w, of -log2 P(" w" | c) in bits;
  a word of several tokens sums its tokens' log-probabilities.
- learning curve: surprisal against x = log10(step). Evaluations before step 1 are left out
  (log10 0 is -inf, and step 0 is the untrained model). The curve is fitted by

      f(x) = a + b * s(c * (x - d)) + e * s(g * (x - h)),   s(z) = 1 / (1 + exp(-z)),   c, g > 0

  because a model from scratch often first *raises* a word's surprisal (while it learns unigram
  frequencies) and only then lowers it. A single sigmoid (e = 0) is fitted too, and the double one is
  kept only if its small-sample AIC (AICc) is lower; the double fit needs 9 points, the single one 4
  (fewer: no curve).
- nAoA@p: read the fitted curve at the evaluated steps; `low` is its lowest value there and `start` its
  highest value at an evaluated step before that (its first value if it only falls, the peak if it
  rises first). Reading them at evaluated steps keeps a wiggle of the fit between evaluations from
  inventing a rise or a fall. nAoA@p is the smallest x from the start's step on with
  f(x) <= start - p * (start - low), found by root-finding on f. None when start - low is at most
  max(0.25 bits, 3 x the fit's RMSE): that is noise, not learning. p = 0.5 is Chang & Bergen's midpoint
  (their start is a uniform guess's surprisal, where a model from scratch starts anyway).
- nAoA@[.5:.95]: the mean of nAoA@p over p = 0.50, 0.55, ..., 0.95 (as COCO averages over IoU
  thresholds); None if any is None (with one drop test for all p, that is: all are None).
- effective vocabulary at step s: the number of words with nAoA@0.5 <= log10(s).
- practice correlation: Spearman's rho between words' cumulative trial counts and their surprisal at
  one step; "practice makes perfect" predicts rho < 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq, least_squares
from scipy.stats import spearmanr

if TYPE_CHECKING:  # the report only reads JSON; it should not have to load torch and transformers
    from node.llm.host import ModelHost
    from node.tasks.word_learning import WordLearningTask

Array = NDArray[np.float64]
NAOA_FRACTIONS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95
MIN_DROP_BITS = 0.25  # a quarter bit is a 19% rise in probability: less is not "learning the word"
SINGLE_POINTS, DOUBLE_POINTS = 4, 9  # the single's 4 parameters; AICc of 7 parameters needs n >= 9
SLOPE_BOUNDS = (0.1, 60.0)  # per log10 unit: from nearly linear to a step under a tenth of a decade wide
STARTING_SLOPES = (4.0,)  # a transition about a decade wide
_GRID = 2001  # points between the start and the minimum on which a crossing is bracketed


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run: per-word surprisal (bits) and cumulative trial counts at a step."""

    step: int
    surprisal: Mapping[str, float]
    trial_counts: Mapping[str, int] = field(default_factory=dict)


def word_surprisal(
    host: ModelHost, task: WordLearningTask, words: Sequence[str], contexts_per_word: int, seed: int = 0
) -> dict[str, float]:
    """Mean -log2 P(" word" | context) in bits over the task's test contexts of each word, in one scoring call.

    A context that does not fit the model's positions is skipped; a word with no context left, or that the
    tokenizer only knows as <unk> (its probability would be that of every unknown word), is left out.
    """
    from node.llm.tokenizer import encode  # here, not at the top: see the TYPE_CHECKING imports

    unknown = host.tokenizer.unk_token_id
    pairs: list[tuple[str, str, str]] = []  # (word, context, continuation)
    for word in words:
        continuation = " " + word
        tail = encode(host.tokenizer, continuation, add_bos=False)
        if not tail or (unknown is not None and unknown in tail):
            continue
        for context in task.test_contexts(word, contexts_per_word, seed):
            if len(encode(host.tokenizer, context)) + len(tail) <= host.max_positions:
                pairs.append((word, context, continuation))
    scores = host.score_sync([context for _, context, _ in pairs], [tail for _, _, tail in pairs])
    bits: dict[str, list[float]] = {}
    for (word, _, _), score in zip(pairs, scores, strict=True):
        bits.setdefault(word, []).append(-score.total / math.log(2))
    return {word: math.fsum(values) / len(values) for word, values in bits.items()}


# -- learning curves ----------------------------------------------------------------------------------


def _sigmoid(z: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow for large |z|


def _curve(x: Array, params: Sequence[float]) -> tuple[Array, Array]:
    """f(x) and its Jacobian for params (a, b, c, d) or (a, b, c, d, e, g, h): one or two sigmoids."""
    value, columns = np.full_like(x, params[0]), [np.ones_like(x)]
    for b, c, d in (params[1:4], params[4:7])[: (len(params) - 1) // 3]:
        s = _sigmoid(c * (x - d))
        slope = b * s * (1.0 - s)  # d(b*s)/dz, with z = c(x - d)
        value = value + b * s
        columns += [s, slope * (x - d), -slope * c]
    return value, np.stack(columns, axis=1)


@dataclass(frozen=True)
class DoubleSigmoid:
    """A fitted learning curve f(x) = a + b*s(c(x - d)) + e*s(g(x - h)) over x = log10(step)."""

    a: float
    b: float
    c: float
    d: float
    e: float  # 0 for a single sigmoid (then g and h are unused)
    g: float
    h: float
    kind: Literal["single", "double"]
    observed: tuple[float, ...]  # the log10 steps fitted, in order
    rmse: float  # of the fit on its points, in bits

    @property
    def x_range(self) -> tuple[float, float]:
        return self.observed[0], self.observed[-1]

    def __call__(self, x: ArrayLike) -> Array:
        xs = np.asarray(x, dtype=np.float64)
        values: Array = _curve(xs.reshape(-1), (self.a, self.b, self.c, self.d, self.e, self.g, self.h))[0]
        return values.reshape(xs.shape)


def fit_learning_curve(steps: Sequence[int], surprisal: Sequence[float]) -> DoubleSigmoid | None:
    """The better (by AICc) of a single and a double sigmoid through (log10 step, surprisal); None under 4 points."""
    points = sorted((math.log10(s), y) for s, y in zip(steps, surprisal, strict=True) if s >= 1 and math.isfinite(y))
    x = np.array([p[0] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    if len(points) < SINGLE_POINTS or x[-1] == x[0]:
        return None
    x0, x1, span = float(x[0]), float(x[-1]), float(x[-1] - x[0])
    spread = max(float(np.ptp(y)), 1e-3)
    level = (float(y.min()) - 2 * spread, float(y.max()) + 2 * spread)
    height, centre = (-3 * spread, 3 * spread), (x0 - span / 2, x1 + span / 2)
    single_bounds = [level, height, SLOPE_BOUNDS, centre]
    candidates: list[tuple[float, DoubleSigmoid]] = []
    single = _fit(x, y, _single_starts(x, y), single_bounds)
    if single is not None:
        a, b, c, d = single
        candidates.append(_scored(x, y, (a, b, c, d, 0.0, 1.0, x0), "single", 4))
    if len(points) >= DOUBLE_POINTS:
        double = _fit(x, y, _double_starts(x, y), [*single_bounds, height, SLOPE_BOUNDS, centre])
        if double is not None:
            candidates.append(_scored(x, y, tuple(double), "double", 7))
    return min(candidates, key=lambda scored: scored[0])[1] if candidates else None


def _scored(
    x: Array, y: Array, params: Sequence[float], kind: Literal["single", "double"], k: int
) -> tuple[float, DoubleSigmoid]:
    """(AICc, curve); the squared error is floored so that two exact fits tie and the simpler one wins."""
    a, b, c, d, e, g, h = (float(p) for p in params)
    sse = float(np.sum((_curve(x, (a, b, c, d, e, g, h))[0] - y) ** 2))
    n = len(x)
    # Only compared when n >= DOUBLE_POINTS, so n - k - 1 > 0 for both fits.
    aicc = n * math.log(max(sse / n, 1e-10)) + 2 * k + 2 * k * (k + 1) / max(n - k - 1, 1)
    return aicc, DoubleSigmoid(a, b, c, d, e, g, h, kind, tuple(float(v) for v in x), math.sqrt(sse / n))


def _single_starts(x: Array, y: Array) -> list[list[float]]:
    """From the first to the last value, centred at a quarter, half and three quarters of the range."""
    x0, span = float(x[0]), float(x[-1] - x[0])
    first, last = float(y[0]), float(y[-1])
    return [[first, last - first, c, x0 + q * span] for q in (0.25, 0.5, 0.75) for c in STARTING_SLOPES]


def _double_starts(x: Array, y: Array) -> list[list[float]]:
    """Rise to the peak then fall; fall in two stages; fall to the trough then rise."""
    x0, x1, span = float(x[0]), float(x[-1]), float(x[-1] - x[0])
    first, last = float(y[0]), float(y[-1])
    peak, trough = int(np.argmax(y)), int(np.argmin(y))
    shapes = [
        (float(y[peak]) - first, (x0 + float(x[peak])) / 2, last - float(y[peak]), (float(x[peak]) + x1) / 2),
        ((last - first) / 2, x0 + span / 3, (last - first) / 2, x0 + 2 * span / 3),
        (float(y[trough]) - first, (x0 + float(x[trough])) / 2, last - float(y[trough]), (float(x[trough]) + x1) / 2),
    ]
    return [[first, b, c, d, e, c, h] for b, d, e, h in shapes for c in STARTING_SLOPES]


def _fit(x: Array, y: Array, starts: list[list[float]], bounds: list[tuple[float, float]]) -> list[float] | None:
    """Bounded least squares (as curve_fit does it) from each start; the best result, as fits find local minima."""
    lower, upper = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    best: tuple[float, list[float]] | None = None
    for start in starts:
        result = least_squares(
            lambda p: _curve(x, p)[0] - y,
            np.clip(start, lower, upper),
            jac=lambda p: _curve(x, p)[1],
            bounds=(lower, upper),
            max_nfev=200,  # a start that has not converged by then is a poor one; its result still counts
        )
        sse = 2 * float(result.cost)
        if math.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, [float(p) for p in result.x])
    return best[1] if best else None


# -- ages of acquisition --------------------------------------------------------------------------------


def naoa(fit: DoubleSigmoid, fraction: float = 0.5, x_range: tuple[float, float] | None = None) -> float | None:
    """The first log10 step at which the curve has fallen `fraction` of the way from its start to its minimum.

    x_range limits the evaluated steps considered (default: all of them).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be above 0 and at most 1 (got {fraction}).")
    lo, hi = x_range or fit.x_range
    steps = np.array([x for x in fit.observed if lo <= x <= hi], dtype=np.float64)
    if len(steps) < 2:
        return None
    values = fit(steps)
    low_at = int(np.argmin(values))
    start_at = int(np.argmax(values[: low_at + 1]))  # the peak before the minimum: where the fall starts
    start, low = float(values[start_at]), float(values[low_at])
    if start - low <= max(MIN_DROP_BITS, 3 * fit.rmse):
        return None
    threshold = start - fraction * (start - low)
    xs = np.linspace(steps[start_at], steps[low_at], _GRID)
    at = int(np.argmax(fit(xs) <= threshold))  # the first grid point at or below; the last one is
    if at == 0:
        return float(xs[0])
    crossing: float = brentq(lambda x: float(fit(x)) - threshold, float(xs[at - 1]), float(xs[at]), xtol=1e-9)
    return float(crossing)


def naoa_range(
    fit: DoubleSigmoid, fractions: Sequence[float] = NAOA_FRACTIONS, x_range: tuple[float, float] | None = None
) -> float | None:
    """nAoA@[.5:.95]: the mean nAoA over the fractions; None if the curve never reaches one of them."""
    ages = [naoa(fit, fraction, x_range) for fraction in fractions]
    known = [age for age in ages if age is not None]
    return math.fsum(known) / len(known) if known and len(known) == len(ages) else None


def learning_curves(history: Sequence[Evaluation]) -> dict[str, tuple[list[int], list[float]]]:
    """Each word's (steps, surprisals), in the order of the history; a word may miss some evaluations."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for evaluation in history:
        for word, bits in evaluation.surprisal.items():
            steps, values = curves.setdefault(word, ([], []))
            steps.append(evaluation.step)
            values.append(bits)
    return curves


def fit_words(history: Sequence[Evaluation]) -> dict[str, DoubleSigmoid | None]:
    return {word: fit_learning_curve(steps, bits) for word, (steps, bits) in learning_curves(history).items()}


def effective_vocabulary(
    history: Sequence[Evaluation], ages: Mapping[str, float | None] | None = None
) -> list[tuple[int, int]]:
    """(step, number of words with nAoA@0.5 <= log10 step) per evaluation; `ages` saves refitting."""
    if ages is None:
        ages = {word: None if fit is None else naoa(fit) for word, fit in fit_words(history).items()}
    known = [age for age in ages.values() if age is not None]
    return [(e.step, sum(age <= math.log10(e.step) for age in known) if e.step >= 1 else 0) for e in history]


def practice_correlation(trial_counts: Mapping[str, int], surprisal: Mapping[str, float]) -> float | None:
    """Spearman's rho of trial count against surprisal over the words in both; None under 3 words or if constant."""
    words = [word for word in surprisal if word in trial_counts]
    counts, bits = [trial_counts[w] for w in words], [surprisal[w] for w in words]
    if len(words) < 3 or len(set(counts)) < 2 or len(set(bits)) < 2:
        return None
    rho = float(spearmanr(counts, bits).statistic)
    return rho if math.isfinite(rho) else None
