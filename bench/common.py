"""What every benchmark shares: the machine it ran on, and writing JSON + a markdown table."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from node import __version__

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, GPU, versions."""
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "agora": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


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
