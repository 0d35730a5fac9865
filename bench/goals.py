"""Every benchmark's verdicts in one shape, and one reader for all of them.

A results file `bench/results/NAME.json` carries `goals`: one entry per goal,
`{"name", "value", "target", "met", "ci95"}` (`ci95` is `[lo, hi]` or null). `value` is the
measured figure in the unit the target names; `met` is judged on it (and, where the target
says so, on its confidence interval).

    python -m bench.goals            # every committed result's goals, one table
    python -m bench.goals --check    # exit 1 if a results file lacks a complete goals list
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
KEYS = ("name", "value", "target", "met", "ci95")


@dataclass(frozen=True)
class Goal:
    """One goal of a benchmark and whether this run met it."""

    name: str  # snake_case, stable across runs (e.g. "tripost_vs_sft_seen")
    value: float | None  # None when the run could not measure it (the goal is then not met)
    target: str  # what "met" means, e.g. ">= 4x", "> 0 and the 95% CI excludes 0", "recorded"
    met: bool
    ci95: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        value = None if self.value is None or not math.isfinite(self.value) else self.value
        return {
            "name": self.name,
            "value": value,
            "target": self.target,
            "met": bool(self.met),
            "ci95": None if self.ci95 is None else [self.ci95[0], self.ci95[1]],
        }


def goals_json(goals: Sequence[Goal]) -> list[dict[str, Any]]:
    return [goal.to_json() for goal in goals]


def problems(data: Any) -> list[str]:
    """What is wrong with a results file's `goals` (empty when it is complete)."""
    goals = data.get("goals") if isinstance(data, dict) else None
    if not isinstance(goals, list) or not goals:
        return ["no goals list"]
    found = []
    for index, goal in enumerate(goals):
        if not isinstance(goal, dict) or set(goal) != set(KEYS):
            found.append(f"goals[{index}] must have exactly the keys {', '.join(KEYS)}")
            continue
        if not isinstance(goal["met"], bool):
            found.append(f"goals[{index}].met must be true or false")
        ci = goal["ci95"]
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2):
            found.append(f"goals[{index}].ci95 must be [lo, hi] or null")
    return found


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def summary(results: Path = RESULTS) -> tuple[str, list[str]]:
    """A markdown table of every results file's goals, and the files whose goals are incomplete."""
    rows, bad = [], []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        wrong = problems(data)
        if wrong:
            bad.append(f"{path.name}: {'; '.join(wrong)}")
            continue
        for goal in data["goals"]:
            ci = goal["ci95"]
            interval = "-" if ci is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"
            verdict = "met" if goal["met"] else "missed"
            rows.append(
                f"| {path.stem} | {goal['name']} | {_fmt(goal['value'])} | {interval} | {goal['target']} | {verdict} |"
            )
    header = "| benchmark | goal | value | 95% CI | target | verdict |\n|---|---|---|---|---|---|"
    return "\n".join([header, *rows]), bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.goals", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a results file lacks a complete goals list")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default bench/results)")
    args = parser.parse_args(argv)
    table, bad = summary(args.results)
    print(table)
    for line in bad:
        print(f"incomplete: {line}", file=sys.stderr)
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
