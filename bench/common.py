"""What every benchmark shares: the machine it ran on, and writing JSON + a markdown table."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.goals import problems
from node.config import StudentSection
from node.machine import machine

RESULTS = Path(__file__).parent / "results"
Half = Literal["test", "validation"]  # which held-out problems a learning benchmark grades on


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], table: str, out_dir: Path = RESULTS) -> Path:
    """bench/results/NAME.json (everything) and NAME.md (the table and the machine). `data` must
    carry a complete `goals` list (bench/goals.py); a benchmark without one is a bug, caught here."""
    wrong = problems(data)
    if wrong:
        raise ValueError(f"the results of {name} are incomplete: {'; '.join(wrong)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine(), **data}
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    facts = data["machine"]
    where = f"{facts['cpu']}, {facts['cores']} cores" + (f", GPU {facts['gpu']}" if facts["gpu"] else ", no GPU")
    header = (
        f"# {name}\n\nMachine: {where}; torch {facts['torch']}, transformers {facts['transformers']}; {facts['date']}\n"
    )
    (out_dir / f"{name}.md").write_text(f"{header}\n{table}\n")
    return out_dir / f"{name}.json"


@dataclass(frozen=True)
class Tuning:
    """What a tuning run changes from a benchmark's committed plan, on the validation problems only:
    fewer seeds (cheaper comparisons), student.* settings applied to every student, and a stage A
    with a share of improvement-format examples."""

    seeds: int | None = None
    student: Mapping[str, Any] = field(default_factory=dict)
    stage_a_improvement: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"student": dict(self.student)}


UNTUNED = Tuning()


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE of --student, the value read as JSON where it parses (0, 0.5, true, "x") and as text otherwise."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key not in StudentSection.model_fields:
        raise argparse.ArgumentTypeError(f"{key!r} is not a student setting (see the README's student.* table)")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _parser(name: str, doc: str, quick_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    return parser


def finish(name: str, result: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> int:
    """Write a benchmark's results (write_results) and print its table; the exit code 0."""
    text = table(result)
    write_results(name, result, text)
    print(text)
    return 0


def run_learning_benchmark(
    name: str,
    doc: str,
    quick_help: str,
    run: Callable[[bool, Path], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    argv: list[str] | None = None,
) -> int:
    """The command line of a benchmark that learns through simulated nodes: --quick, --out (the
    runs are kept there; default a temporary directory), then NAME[-quick].json/.md."""
    args = _parser(name, doc, quick_help).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"agora-{name.replace('_', '-')}-") as scratch:
        out = (args.out or Path(scratch) / "run").resolve()
        out.mkdir(parents=True, exist_ok=True)
        result = run(args.quick, out)
    return finish(f"{name}{'-quick' if args.quick else ''}", result, table)


def run_tuned_benchmark(
    name: str,
    doc: str,
    quick_help: str,
    run: Callable[[bool, Path, Half, Tuning], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    argv: list[str] | None = None,
) -> int:
    """run_learning_benchmark for a benchmark whose hyperparameters are chosen on validation
    problems: --validation grades on them, and only there may --seeds and --student KEY=VALUE change
    the plan, so that the test problems are never read while tuning. Writes
    NAME[-quick][-validation].json/.md."""
    parser = _parser(name, doc, quick_help)
    parser.add_argument(
        "--validation", action="store_true", help="grade on the validation problems, not the test ones (tuning)"
    )
    parser.add_argument("--seeds", type=int, help="with --validation: this many seeds instead of the plan's")
    parser.add_argument(
        "--student",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --validation: a student.* setting for every student (repeatable), e.g. tripost_attempt_weight=0",
    )
    parser.add_argument(
        "--stage-a-improvement",
        type=float,
        metavar="SHARE",
        help="with --validation: stage A with improvement-format examples, this share of its gold pool",
    )
    args = parser.parse_args(argv)
    changed = args.seeds is not None or args.student or args.stage_a_improvement is not None
    if not args.validation and changed:
        parser.error(
            "--seeds, --student and --stage-a-improvement change the plan, "
            "which only a --validation run may do (tuning)"
        )
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.stage_a_improvement is not None and not 0 <= args.stage_a_improvement <= 1:
        parser.error("--stage-a-improvement must be a share between 0 and 1")
    tuning = Tuning(args.seeds, dict(args.student), args.stage_a_improvement)
    half: Half = "validation" if args.validation else "test"
    with tempfile.TemporaryDirectory(prefix=f"agora-{name.replace('_', '-')}-") as scratch:
        out = (args.out or Path(scratch) / "run").resolve()
        out.mkdir(parents=True, exist_ok=True)
        result = run(args.quick, out, half, tuning) | {"tuning": tuning.to_json()}
    suffix = f"{'-quick' if args.quick else ''}{'-validation' if args.validation else ''}"
    return finish(f"{name}{suffix}", result, table)
