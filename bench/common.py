"""What every benchmark shares: the machine it ran on, and writing JSON + a markdown table."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from bench.goals import problems
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


def run_learning_benchmark(
    name: str,
    doc: str,
    quick_help: str,
    run: Callable[[bool, Path, Half], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    argv: list[str] | None = None,
    validation: bool = False,
) -> int:
    """The command line of a benchmark that learns through simulated nodes: --quick, --validation
    (grade on the validation problems, to choose hyperparameters without reading the test ones),
    --out (the runs are kept there; default a temporary directory), then NAME[-quick][-validation].json/.md."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if validation:  # the benchmarks whose hyperparameters are tuned have validation problems
        parser.add_argument(
            "--validation", action="store_true", help="grade on the validation problems, not the test ones (tuning)"
        )
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"agora-{name.replace('_', '-')}-") as scratch:
        out = (args.out or Path(scratch) / "run").resolve()
        out.mkdir(parents=True, exist_ok=True)
        half: Half = "validation" if validation and args.validation else "test"
        result = run(args.quick, out, half)
    text = table(result)
    write_results(
        f"{name}{'-quick' if args.quick else ''}{'-validation' if half == 'validation' else ''}", result, text
    )
    print(text)
    return 0
