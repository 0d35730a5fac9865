"""Word-learning metrics: surprisal on a real tiny model, fitted learning curves and nAoA, the TnD report."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from node.llm import ModelHost, TinySpec, TrainingExample
from node.llm.tokenizer import encode, train_tokenizer
from node.tasks import get_task
from node.tasks.word_learning import WordLearningTask
from student.tnd_report import METRICS_FILE, PLOT_FILE, REPORT_FILE, SURPRISAL_FILE, write_report
from student.word_metrics import (
    NAOA_FRACTIONS,
    DoubleSigmoid,
    Evaluation,
    effective_vocabulary,
    fit_learning_curve,
    naoa,
    naoa_range,
    practice_correlation,
    word_surprisal,
)

STEPS = sorted({round(s) for s in np.logspace(0, 4, 20)})  # 1 ... 10^4, log-spaced
NOISE_BITS = 0.05


def _curve(
    a: float,
    b: float,
    c: float,
    d: float,
    e: float = 0.0,
    g: float = 1.0,
    h: float = 0.0,
    *,
    steps: Sequence[int] = STEPS,
) -> DoubleSigmoid:
    """A true curve (no noise) evaluated at steps."""
    observed = tuple(math.log10(s) for s in steps if s >= 1)
    return DoubleSigmoid(a, b, c, d, e, g, h, "double" if e else "single", observed, 0.0)


def _observe(curve: DoubleSigmoid, steps: list[int], seed: int) -> list[float]:
    noise = np.random.default_rng(seed).normal(0.0, NOISE_BITS, len(steps))
    return [float(v) for v in curve([math.log10(s) for s in steps]) + noise]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# -- fitted curves and nAoA -------------------------------------------------------------------------------

FALLS = [(10.0, -6.0, 3.0, 2.0), (10.0, -7.0, 1.5, 2.5), (6.0, -4.0, 8.0, 1.2), (11.0, -5.0, 2.0, 3.0)]
DOUBLES = [
    (9.0, 3.0, 4.0, 0.8, -8.0, 3.0, 2.6),  # rises first (unigram phase), then falls
    (12.0, -3.0, 5.0, 1.0, -4.0, 3.0, 3.0),  # falls in two stages
]


@pytest.mark.parametrize("params", FALLS)
def test_naoa_of_a_falling_sigmoid_is_its_analytic_crossing(params: tuple[float, float, float, float]) -> None:
    a, b, c, d = params
    curve = _curve(a, b, c, d)
    start, low = float(curve(0.0)), float(curve(4.0))  # it only falls: the values at the first and last steps
    crossings = []
    for fraction in NAOA_FRACTIONS:
        threshold = start - fraction * (start - low)
        crossings.append(d + _logit((threshold - a) / b) / c)  # solve a + b*s(c(x - d)) = threshold
    assert naoa(curve) == pytest.approx(crossings[0], abs=1e-6)
    assert naoa_range(curve) == pytest.approx(sum(crossings) / len(crossings), abs=1e-6)


@pytest.mark.parametrize(
    ("params", "seed"), [(p, i) for i, p in enumerate(FALLS)] + [(p, 10 + i) for i, p in enumerate(DOUBLES)]
)
def test_fit_recovers_naoa_of_noisy_curves(params: tuple[float, ...], seed: int) -> None:
    truth = _curve(*params)
    fit = fit_learning_curve(STEPS, _observe(truth, STEPS, seed))
    assert fit is not None
    assert fit.rmse < 2 * NOISE_BITS
    true_age, true_range = naoa(truth), naoa_range(truth)
    assert true_age is not None and true_range is not None
    assert abs(naoa(fit) - true_age) < 0.1  # type: ignore[operator]
    assert abs(naoa_range(fit) - true_range) < 0.1  # type: ignore[operator]


def test_a_curve_that_rises_first_is_fitted_by_two_sigmoids_and_timed_from_its_peak() -> None:
    truth = _curve(*DOUBLES[0])
    fit = fit_learning_curve(STEPS, _observe(truth, STEPS, 3))
    assert fit is not None and fit.kind == "double"
    observed = np.array(fit.observed)
    peak = float(observed[np.argmax(fit(observed))])
    age = naoa(fit)
    # The first value is far below the peak, so timing the fall from the first value would put it at x = 0.
    assert peak > 0.7 and age is not None and peak < age < 4.0
    start, low = float(fit(peak)), float(fit(4.0))
    assert float(fit(age)) == pytest.approx(start - 0.5 * (start - low), abs=1e-6)


@pytest.mark.parametrize("curve", [_curve(8.0, 4.0, 3.0, 2.0), _curve(7.0, 0.0, 1.0, 2.0)], ids=["rises only", "flat"])
def test_a_curve_that_never_falls_has_no_naoa(curve: DoubleSigmoid) -> None:
    fit = fit_learning_curve(STEPS, _observe(curve, STEPS, 5))
    assert fit is not None
    assert naoa(fit) is None
    assert naoa_range(fit) is None


def test_too_few_points_give_no_fit() -> None:
    falling = _curve(*FALLS[0])
    assert fit_learning_curve([1, 10, 100], _observe(falling, [1, 10, 100], 0)) is None
    # Step 0 is left out (log10 0 is -inf), so four evaluations from step 0 are three points.
    assert fit_learning_curve([0, 1, 10, 100], [10.0, *_observe(falling, [1, 10, 100], 0)]) is None
    assert fit_learning_curve([1, 10, 100, 1000], _observe(falling, [1, 10, 100, 1000], 0)) is not None


def test_naoa_rejects_a_fraction_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="fraction"):
        naoa(_curve(*FALLS[0]), 1.5)


# -- effective vocabulary and practice ------------------------------------------------------------------


def test_effective_vocabulary_counts_words_acquired_by_each_step() -> None:
    truths = {"early": _curve(10, -6, 6, 1.0), "middle": _curve(10, -6, 6, 2.0), "late": _curve(10, -6, 6, 3.0)}
    truths["never"] = _curve(7.0, 0.0, 1.0, 2.0)
    observed = {word: _observe(curve, STEPS, i) for i, (word, curve) in enumerate(truths.items())}
    history = [Evaluation(0, {w: 10.0 for w in truths})] + [
        Evaluation(step, {w: observed[w][i] for w in truths}) for i, step in enumerate(STEPS)
    ]
    counts = effective_vocabulary(history)
    assert [step for step, _ in counts] == [0, *STEPS]
    assert counts[0] == (0, 0) and counts[-1] == (STEPS[-1], 3)  # "never" is never counted
    assert [n for _, n in counts] == sorted(n for _, n in counts)  # never decreases
    for step, count in counts[1:]:
        x = math.log10(step)
        if all(abs(x - d) > 0.15 for d in (1.0, 2.0, 3.0)):  # away from a crossing, the count is exact
            assert count == sum(d <= x for d in (1.0, 2.0, 3.0)), step


def test_effective_vocabulary_from_given_ages() -> None:
    history = [Evaluation(s, {}) for s in (0, 1, 10, 100, 1000)]
    ages = {"a": 0.5, "b": 2.0, "c": None}
    assert effective_vocabulary(history, ages) == [(0, 0), (1, 0), (10, 1), (100, 2), (1000, 2)]


def test_practice_correlation_is_negative_when_practised_words_are_less_surprising() -> None:
    counts = {f"w{i}": 5 * i for i in range(10)}
    noise = np.random.default_rng(0).normal(0, 0.5, 10)
    practised = {f"w{i}": 12.0 - i + float(noise[i]) for i in range(10)}
    assert practice_correlation(counts, practised) < -0.8  # type: ignore[operator]
    assert practice_correlation(counts, {w: -v for w, v in practised.items()}) > 0.8  # type: ignore[operator]
    assert practice_correlation(counts, {f"w{i}": 10.0 - i for i in range(10)}) == pytest.approx(-1.0)


def test_practice_correlation_needs_three_shared_words_that_vary() -> None:
    assert practice_correlation({"a": 1, "b": 2}, {"a": 3.0, "b": 1.0, "c": 0.5}) is None
    assert practice_correlation(dict.fromkeys("abcd", 4), {w: float(i) for i, w in enumerate("abcd")}) is None
    assert practice_correlation({}, {"a": 1.0}) is None


# -- surprisal from a real tiny model -------------------------------------------------------------------


@pytest.fixture
def task() -> WordLearningTask:
    task = get_task("word_learning")
    assert isinstance(task, WordLearningTask)
    return task


def _known_words(host: ModelHost, task: WordLearningTask, n: int) -> list[str]:
    vocabulary = host.tokenizer.get_vocab()
    return [w for w in task.test_words() if w in vocabulary][:n]


def test_word_surprisal_is_the_mean_bits_of_the_words_continuations(task: WordLearningTask) -> None:
    built = ModelHost.build(task, TinySpec(layers=1, dim=32, heads=4), seed=1)
    # A tokenizer from a small corpus lacks some test words (the task's own knows them all).
    tokenizer = train_tokenizer(task.sentences(40, seed=5), "word")
    host = ModelHost(built.model, tokenizer, built.placement, built.metadata)
    words = _known_words(host, task, 3)
    unknown = [w for w in task.test_words() if w not in host.tokenizer.get_vocab()][:1]  # <unk> to the tokenizer
    assert unknown
    values = word_surprisal(host, task, words + unknown, contexts_per_word=4, seed=3)
    assert list(values) == words
    for word in words:
        contexts = task.test_contexts(word, 4, 3)
        scores = host.score_sync(contexts, [" " + word] * len(contexts))
        expected = sum(-s.total / math.log(2) for s in scores) / len(scores)
        assert math.isfinite(values[word]) and values[word] > 0
        assert values[word] == pytest.approx(expected, rel=1e-5)


def test_contexts_too_long_for_the_model_are_skipped(task: WordLearningTask) -> None:
    limit = 4  # BOS + context + the word: contexts of up to two words fit
    host = ModelHost.build(task, TinySpec(layers=1, dim=32, heads=4, max_positions=limit), seed=1)
    words = _known_words(host, task, 6)
    values = word_surprisal(host, task, words, contexts_per_word=4, seed=0)
    for word in words:
        kept = [c for c in task.test_contexts(word, 4, 0) if len(encode(host.tokenizer, c)) + 1 <= limit]
        if not kept:
            assert word not in values
            continue
        scores = host.score_sync(kept, [" " + word] * len(kept))
        assert values[word] == pytest.approx(sum(-s.total / math.log(2) for s in scores) / len(kept), rel=1e-5)
    assert 0 < len(values) < len(words)  # both branches above ran


def test_training_on_a_word_lowers_its_surprisal(task: WordLearningTask) -> None:
    host = ModelHost.build(task, TinySpec(layers=1, dim=32, heads=4), seed=2)
    word, other = _known_words(host, task, 2)
    before = word_surprisal(host, task, [word, other], contexts_per_word=8, seed=0)
    # The contexts trained on are drawn with another seed than those measured; no end of sentence follows.
    examples = [
        TrainingExample(prompt=c, target=" " + word, append_eos=False) for c in task.test_contexts(word, 16, seed=1)
    ]
    optimizer = host.make_optimizer(lr=1e-2)
    for _ in range(30):
        host.train_step(examples, optimizer)
    after = word_surprisal(host, task, [word, other], contexts_per_word=8, seed=0)
    assert after[word] < before[word] - 2.0
    assert after[word] < after[other]


# -- the report ---------------------------------------------------------------------------------------------

REPORT_STEPS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]  # 12 evaluations, step 0 untrained
AGES = [1.0, 1.2, 1.5, 1.7, 2.0, 2.2, 2.5, 2.8]


def _report_curves() -> dict[str, DoubleSigmoid]:
    curves = {f"word{i}": _curve(10.0, -6.0, 4.0, d, steps=REPORT_STEPS) for i, d in enumerate(AGES)}
    curves["riser"] = _curve(9.0, 3.0, 6.0, 0.7, -8.0, 4.0, 2.0, steps=REPORT_STEPS)  # rises first, then falls
    curves["never"] = _curve(7.0, 0.0, 1.0, 2.0, steps=REPORT_STEPS)  # never learned
    return curves


def _write_run(run_dir: Path, trials: bool = True) -> dict[str, DoubleSigmoid]:
    curves = _report_curves()
    steps = REPORT_STEPS[1:]
    observed = {w: [10.0, *_observe(c, steps, i)] for i, (w, c) in enumerate(curves.items())}
    with (run_dir / SURPRISAL_FILE).open("w") as out:
        for i, step in enumerate(REPORT_STEPS):
            # Words learned earlier were practised more: trial counts fall with the word's age.
            counts = {w: step * (len(curves) - j) for j, w in enumerate(curves)} if trials else {}
            record = {"step": step, "surprisal": {w: observed[w][i] for w in curves}, "trial_counts": counts}
            out.write(json.dumps(record) + "\n")
    run = {"algorithm": "tnd", "mode": "tnd", "task": "word_learning", "seed": 7, "steps": 2000, "extra": [1]}
    (run_dir / "run.json").write_text(json.dumps(run))
    return curves


def test_report_writes_markdown_json_and_plot_that_agree(tmp_path: Path) -> None:
    curves = _write_run(tmp_path)
    summary = write_report(tmp_path)
    assert summary.report_path == tmp_path / REPORT_FILE
    assert summary.plot_path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert summary.plot_path.stat().st_size > 5000
    metrics = json.loads(summary.metrics_path.read_text())
    report = summary.report_path.read_text()

    assert (summary.mode, summary.seed, summary.steps, summary.evaluations) == ("tnd", 7, 2000, 12)
    assert "mode **tnd**, seed 7, 2000 steps" in report
    assert metrics["run"]["extra"] == [1]  # unknown run.json keys pass through
    assert (summary.words, summary.words_with_naoa) == (10, 9)
    assert metrics["summary"]["mean_naoa"] == summary.mean_naoa
    assert metrics["summary"]["mean_naoa_range"] == summary.mean_naoa_range
    assert f"| mean nAoA@0.5 | {summary.mean_naoa:.3f} |" in report
    assert f"| mean nAoA@[.5:.95] | {summary.mean_naoa_range:.3f} |" in report

    true_ages = [naoa(c) for c in curves.values()]
    true_mean = sum(a for a in true_ages if a is not None) / 9
    assert summary.mean_naoa == pytest.approx(true_mean, abs=0.1)

    words = metrics["words"]
    ages = [w["naoa"] for w in words]
    assert words[-1]["word"] == "never" and ages[-1] is None and words[-1]["fit"] is not None
    assert ages[:-1] == sorted(ages[:-1])  # the per-word table is sorted by nAoA
    table = report.split("| word | nAoA@0.5")[1].splitlines()[2:]  # after the header and its rule
    assert [line.split(" | ")[0].removeprefix("| ") for line in table] == [w["word"] for w in words]
    vocabulary = metrics["effective_vocabulary"]
    assert [step for step, _ in vocabulary] == REPORT_STEPS
    assert [n for _, n in vocabulary] == sorted(n for _, n in vocabulary)
    assert vocabulary[-1][1] == summary.effective_vocabulary == 9
    assert summary.practice_correlation is not None and summary.practice_correlation < -0.5

    lines = summary.lines()
    assert any(line.startswith("mean nAoA@0.5") and f"{summary.mean_naoa:.3f}" in line for line in lines)
    columns = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1  # values start in one column


def test_report_without_trial_counts_goes_to_another_directory(tmp_path: Path) -> None:
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    _write_run(run_dir, trials=False)
    (run_dir / "run.json").write_text(json.dumps({"mode": "clm_only"}))
    summary = write_report(run_dir, out_dir)
    assert summary.practice_correlation is None
    assert (summary.mode, summary.seed, summary.steps) == ("clm_only", None, None)
    assert {p.name for p in out_dir.iterdir()} == {REPORT_FILE, METRICS_FILE, PLOT_FILE}
    assert not (run_dir / REPORT_FILE).exists()
    assert "| practice correlation (Spearman, last step) | n/a |" in (out_dir / REPORT_FILE).read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("\n", "is empty"),
        ('{"step": 1, "surprisal": {"dog": 3.0}}\n{"step": 2, "surpr', r"surprisal\.jsonl, line 2 is not valid JSON"),
        ('{"step": 1, "surprisal": {"dog": 3.0}}\n\n[1, 2]\n', r"line 3 should be a JSON object"),
        ('{"step": "one", "surprisal": {}}\n', r"line 1: step should be a whole number"),
        ('{"step": 1, "surprisal": {"dog": "high"}}\n', r"line 1: surprisal should map words"),
        ('{"step": 1, "surprisal": {}, "trial_counts": {"dog": 1.5}}\n', r"line 1: trial_counts should map"),
    ],
)
def test_a_malformed_surprisal_file_names_the_file_and_line(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / SURPRISAL_FILE).write_text(content)
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path)
