"""The word-learning report of a TnD run (`agora tnd report RUN_DIR`): Markdown, JSON and a plot.

A run directory holds `surprisal.jsonl`, one evaluation per line in step order,
``{"step": int, "surprisal": {word: bits}, "trial_counts": {word: int}}`` (trial counts are cumulative
and may be missing), and `run.json` with the run's mode, seed and steps (optional here). The report
fits every word's learning curve and writes `report.md`, `word_metrics.json` (every number) and
`curves.png`. The definitions (nAoA, effective vocabulary, practice correlation) are
:mod:`student.word_metrics`'s. A step evaluated twice (a resumed run) keeps its last line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from student.word_metrics import (
    NAOA_FRACTIONS,
    DoubleSigmoid,
    Evaluation,
    effective_vocabulary,
    fit_words,
    learning_curves,
    naoa,
    naoa_range,
    practice_correlation,
)

SURPRISAL_FILE, RUN_FILE = "surprisal.jsonl", "run.json"
REPORT_FILE, METRICS_FILE, PLOT_FILE = "report.md", "word_metrics.json", "curves.png"


@dataclass(frozen=True)
class WordResult:
    word: str
    naoa: float | None  # nAoA@0.5, log10 steps
    naoa_range: float | None  # nAoA@[.5:.95]
    first_surprisal: float
    final_surprisal: float
    fit: DoubleSigmoid | None


@dataclass(frozen=True)
class ReportSummary:
    """The overall figures of a report and the files it wrote."""

    mode: str | None
    seed: int | None
    steps: int | None
    evaluations: int
    last_step: int
    words: int
    words_with_naoa: int  # the rest never fell far enough (or had too few points) for an nAoA
    mean_naoa: float | None
    mean_naoa_range: float | None
    effective_vocabulary: int  # at the last step
    practice_correlation: float | None  # at the last step
    report_path: Path
    metrics_path: Path
    plot_path: Path

    def lines(self) -> list[str]:
        """A short aligned table for the CLI."""
        rows = [
            ("run", f"mode {self.mode or '?'}, seed {_text(self.seed)}, {_text(self.steps)} steps"),
            ("evaluations", f"{self.evaluations} (last at step {self.last_step})"),
            ("mean nAoA@0.5", f"{_number(self.mean_naoa)} over {self.words_with_naoa}/{self.words} words"),
            ("mean nAoA@[.5:.95]", f"{_number(self.mean_naoa_range)} over {self.words_with_naoa}/{self.words} words"),
            ("effective vocabulary", f"{self.effective_vocabulary}/{self.words} words at step {self.last_step}"),
            ("practice correlation", _number(self.practice_correlation)),
            ("report", str(self.report_path)),
        ]
        width = max(len(name) for name, _ in rows)
        return [f"{name:<{width}}  {value}" for name, value in rows]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _text(value: object) -> str:
    return "?" if value is None else str(value)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None


# -- reading ----------------------------------------------------------------------------------------------


def read_history(path: Path) -> list[Evaluation]:
    """The evaluations of surprisal.jsonl by step; ValueError naming the file and line of any malformed one."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist; a TnD run writes it at every evaluation.")
    by_step: dict[int, Evaluation] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            evaluation = _parse(line, f"{path}, line {number}")
            by_step[evaluation.step] = evaluation  # a re-evaluated step (resumed run) keeps its last line
    if not by_step:
        raise ValueError(f"{path} is empty; it should hold one evaluation per line.")
    return [by_step[step] for step in sorted(by_step)]


def _parse(line: str, where: str) -> Evaluation:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON ({error.msg}).") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where} should be a JSON object with step and surprisal.")
    step, surprisal, counts = record.get("step"), record.get("surprisal"), record.get("trial_counts") or {}
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{where}: step should be a whole number of at least 0 (got {step!r}).")
    if not isinstance(surprisal, dict) or not all(_is_bits(v) for v in surprisal.values()):
        raise ValueError(f"{where}: surprisal should map words to finite numbers of bits.")
    if not isinstance(counts, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise ValueError(f"{where}: trial_counts should map words to whole numbers.")
    return Evaluation(step, {w: float(v) for w, v in surprisal.items()}, dict(counts))


def _is_bits(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_run(path: Path) -> dict[str, Any]:
    """run.json's settings, or {} when the run wrote none."""
    if not path.is_file():
        return {}
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}).") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path} should hold a JSON object.")
    return run


# -- the report -------------------------------------------------------------------------------------------


def word_results(history: Sequence[Evaluation]) -> list[WordResult]:
    """Every word's fit, nAoA and surprisal, acquired words by nAoA first, then the rest by name."""
    curves = learning_curves(history)
    results = []
    for word, fit in fit_words(history).items():
        ages = (None, None) if fit is None else (naoa(fit), naoa_range(fit))
        results.append(WordResult(word, *ages, curves[word][1][0], curves[word][1][-1], fit))
    return sorted(results, key=lambda r: (r.naoa is None, r.naoa or 0.0, r.word))


def write_report(run_dir: Path, out_dir: Path | None = None) -> ReportSummary:
    """Fit every word's curve and write report.md, word_metrics.json and curves.png into out_dir (or run_dir)."""
    history = read_history(run_dir / SURPRISAL_FILE)
    run = read_run(run_dir / RUN_FILE)
    out = out_dir or run_dir
    out.mkdir(parents=True, exist_ok=True)
    results = word_results(history)
    vocabulary = effective_vocabulary(history, {r.word: r.naoa for r in results})
    last = history[-1]
    summary = ReportSummary(
        mode=run.get("mode") if isinstance(run.get("mode"), str) else None,
        seed=run.get("seed") if isinstance(run.get("seed"), int) else None,
        steps=run.get("steps") if isinstance(run.get("steps"), int) else None,
        evaluations=len(history),
        last_step=last.step,
        words=len(results),
        words_with_naoa=sum(r.naoa is not None for r in results),
        mean_naoa=_mean([r.naoa for r in results]),
        mean_naoa_range=_mean([r.naoa_range for r in results]),
        effective_vocabulary=vocabulary[-1][1],
        practice_correlation=practice_correlation(last.trial_counts, last.surprisal),
        report_path=out / REPORT_FILE,
        metrics_path=out / METRICS_FILE,
        plot_path=out / PLOT_FILE,
    )
    metrics = {
        "run": run,
        "fractions": list(NAOA_FRACTIONS),
        "summary": {k: v for k, v in asdict(summary).items() if not k.endswith("_path")},
        "effective_vocabulary": [list(pair) for pair in vocabulary],
        "words": [{**asdict(r), "trial_count": last.trial_counts.get(r.word)} for r in results],
    }
    summary.metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    summary.report_path.write_text(_markdown(summary, run, results), encoding="utf-8")
    _plot(summary.plot_path, history, results, vocabulary)
    return summary


def _markdown(summary: ReportSummary, run: dict[str, Any], results: Sequence[WordResult]) -> str:
    task = run.get("task", "word_learning")
    lines = [
        "# TnD word-learning report",
        "",
        f"Run: mode **{summary.mode or '?'}**, seed {_text(summary.seed)}, {_text(summary.steps)} steps, task {task}.",
        "nAoA is in log10 training steps (lower is learned earlier); see student/word_metrics.py for definitions.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| evaluations | {summary.evaluations} (last at step {summary.last_step}) |",
        f"| words | {summary.words} ({summary.words - summary.words_with_naoa} without an nAoA) |",
        f"| mean nAoA@0.5 | {_number(summary.mean_naoa)} |",
        f"| mean nAoA@[.5:.95] | {_number(summary.mean_naoa_range)} |",
        f"| effective vocabulary at the last step | {summary.effective_vocabulary} |",
        f"| practice correlation (Spearman, last step) | {_number(summary.practice_correlation)} |",
        "",
        "| word | nAoA@0.5 | nAoA@[.5:.95] | first surprisal | final surprisal | fit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        kind = r.fit.kind if r.fit else "none"
        lines.append(
            f"| {r.word} | {_number(r.naoa)} | {_number(r.naoa_range)} | {r.first_surprisal:.3f} "
            f"| {r.final_surprisal:.3f} | {kind} |"
        )
    return "\n".join(lines) + "\n"


def _plot(
    path: Path, history: Sequence[Evaluation], results: Sequence[WordResult], vocabulary: Sequence[tuple[int, int]]
) -> None:
    """A few words (earliest, middle and latest acquired, and one never acquired) and the vocabulary over time."""
    figure = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    words_axis, vocabulary_axis = figure.subplots(1, 2)
    acquired = [r for r in results if r.naoa is not None]
    spread = sorted({0, len(acquired) // 3, 2 * len(acquired) // 3, len(acquired) - 1}) if acquired else []
    picks = [acquired[i] for i in spread] + [r for r in results if r.naoa is None][:1]
    curves = learning_curves(history)
    for index, r in enumerate(picks):
        color = f"C{index}"
        steps, bits = curves[r.word]
        xs = [math.log10(s) for s in steps if s >= 1]
        words_axis.plot(xs, [b for s, b in zip(steps, bits, strict=True) if s >= 1], "o", color=color, label=r.word)
        if r.fit is not None:
            grid = [r.fit.x_range[0] + (r.fit.x_range[1] - r.fit.x_range[0]) * i / 200 for i in range(201)]
            words_axis.plot(grid, r.fit(grid), "-", color=color)
        if r.naoa is not None:
            words_axis.axvline(r.naoa, color=color, linestyle=":", linewidth=1)
    words_axis.set(xlabel="log10 step", ylabel="surprisal (bits)", title="learning curves (dotted: nAoA@0.5)")
    if picks:
        words_axis.legend(fontsize="small")
    points = [(math.log10(step), count) for step, count in vocabulary if step >= 1]
    vocabulary_axis.step([x for x, _ in points], [n for _, n in points], where="post", marker="o")
    vocabulary_axis.set(xlabel="log10 step", ylabel="words acquired", title="effective vocabulary")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
