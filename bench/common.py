"""What every benchmark shares: the machine it ran on, and writing JSON + a markdown table."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from node.machine import machine

RESULTS = Path(__file__).parent / "results"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], table: str, out_dir: Path = RESULTS) -> Path:
    """bench/results/NAME.json (everything) and NAME.md (the table and the machine)."""
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
    run: Callable[[bool, Path], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    argv: list[str] | None = None,
) -> int:
    """The command line of a benchmark that learns through simulated nodes: --quick, --out (the
    runs are kept there; default a temporary directory), then NAME[-quick].json/.md and the table."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"agora-{name.replace('_', '-')}-") as scratch:
        out = (args.out or Path(scratch) / "run").resolve()
        out.mkdir(parents=True, exist_ok=True)
        result = run(args.quick, out)
    text = table(result)
    write_results(f"{name}-quick" if args.quick else name, result, text)
    print(text)
    return 0
