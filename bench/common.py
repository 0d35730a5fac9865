"""What every benchmark shares: the machine it ran on, and writing JSON + a markdown table."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
