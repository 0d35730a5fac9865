"""The student every arm of a benchmark starts from: a tiny char-level Llama after SFT on a task's
gold data, trained once and reused (E1 and E2 share one; E4 has its own) from bench/.cache/.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node.llm import ModelHost, TinySpec, resolve_placement
from node.llm.sft import SFTConfig, train_sft
from node.tasks import get_task

SHAPE = TinySpec(layers=2, dim=128, heads=4, max_positions=768)  # 0.4M parameters: fast enough to learn on 2 cores
STAMP = "base.json"
CACHE = Path(__file__).parent / ".cache"  # git-ignored

Say = Callable[[str], None]


@dataclass(frozen=True)
class BasePlan:
    """The SFT-on-gold student every arm starts from."""

    task: str
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0


def base_model(plan: BasePlan, cache: Path = CACHE, say: Say = print) -> tuple[Path, dict[str, Any]]:
    """Train the SFT-on-gold base, or reuse the one an earlier run made by the same plan; its
    directory and its training figures."""
    tag = hashlib.sha256(plan.task.encode()).hexdigest()[:8]  # task options make different bases
    directory = cache / f"{get_task(plan.task).name}-{tag}-{plan.steps}x{plan.batch_size}-seed{plan.seed}"
    stamp = directory / STAMP
    if stamp.exists() and json.loads(stamp.read_text())["plan"] == asdict(plan):
        say(f"reusing the SFT base in {directory}")
        return directory, json.loads(stamp.read_text())
    task = get_task(plan.task)
    host = ModelHost.build(task, SHAPE, resolve_placement("auto", "auto"), seed=plan.seed)
    config = SFTConfig(steps=plan.steps, batch_size=plan.batch_size, lr=plan.lr, eval_every=0, eval_n=8, seed=plan.seed)
    started = time.monotonic()

    def progress(step: int, loss: float) -> None:
        if step % 200 == 0 or step == plan.steps:
            say(f"  base SFT step {step}/{plan.steps}, loss {loss:.3f}, {time.monotonic() - started:.0f} s")

    size = f"{host.parameter_count / 1e6:.2f}M parameters"
    say(f"SFT on gold rationales: {plan.steps} steps of {plan.batch_size}, {size}")
    report = train_sft(host, task, config, on_step=progress)
    host.save(directory)
    figures = {
        "plan": asdict(plan),
        "parameters": host.parameter_count,
        "seconds": report.seconds,
        "final_loss": report.last_loss,
        "accuracy": report.final_accuracy,
    }
    stamp.write_text(json.dumps(figures, indent=2) + "\n")
    host.close()
    return directory, figures
