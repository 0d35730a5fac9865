"""What E1 (TriPosT-mini) and E2 (YODA-mini) share: the arithmetic they learn and how a finished
model is graded (their common SFT-on-gold start is bench/sft_base.py).

The task is a smaller arithmetic than the default, so a tiny model learns some of it on 2 CPU
cores in minutes: one flat expression of 2 or 3 single-digit operands in training (e.g.
"(2 + 3 * 4)"), 4 operands unseen (longer problems, as TriPosT's unseen split is). Teacher and
students name it with the same task string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from node.llm import ModelHost, resolve_placement
from node.llm.sampling import SamplingParams
from node.llm.tokenizer import encode
from node.tasks import Example, Split, get_task

TASK = "arithmetic:lengths=2,3:depths=1:unseen_lengths=4:unseen_depths=1"
FEEDBACK = "\nFeedback:"


def grade(model: Path, splits: Mapping[Split, Sequence[Example]], chains: bool) -> dict[str, dict[str, float]]:
    """Greedy answers of a model on each split. With `chains` the model may write attempt ->
    feedback -> updated answer (TriPosT's inference, room for 3 answers); the final answer is the
    last "the answer is X", the first attempt is the text before the first "Feedback:"."""
    task = get_task(TASK)
    host = ModelHost.load(model, resolve_placement("auto", "auto"))
    figures: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for split, examples in splits.items():
            final = first = fixed = broke = 0
            for start in range(0, len(examples), 32):
                chunk = examples[start : start + 32]
                prompts = [task.prompt(e.question) for e in chunk]
                params = []
                for prompt, example in zip(prompts, chunk, strict=True):
                    budget = len(encode(host.tokenizer, example.rationale, add_bos=False)) * 5 // 4 + 8
                    room = host.max_positions - len(encode(host.tokenizer, prompt))
                    params.append(SamplingParams(max_new_tokens=max(1, min(budget * (3 if chains else 1), room))))
                for example, output in zip(chunk, host.generate_sync(prompts, params), strict=True):
                    right_first = task.grade(example, output.text.split(FEEDBACK)[0])
                    right_final = task.grade(example, output.text)
                    first += right_first
                    final += right_final
                    fixed += right_final and not right_first
                    broke += right_first and not right_final
            n = len(examples)
            wrong_first = n - first
            figures[split] = {
                "n": n,
                "accuracy": final / n,
                "first_attempt": first / n,
                "self_correction_rate": fixed / wrong_first if wrong_first else 0.0,
                "right_made_wrong": broke / n,
            }
    host.close()
    return figures


def held_out(n: int, seed: int = 12345) -> dict[Split, list[Example]]:
    """The seen and unseen test problems every model is graded on."""
    task = get_task(TASK)
    return {"seen": task.generate("seen", n, seed), "unseen": task.generate("unseen", n, seed)}


def mean_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One arm's figures: each graded figure and the updates, averaged over its seeds' runs."""
    arm: dict[str, Any] = {"runs": len(runs), "steps": sum(r["steps"] for r in runs) / len(runs)}
    for split in ("seen", "unseen"):
        arm[split] = {key: sum(r[split][key] for r in runs) / len(runs) for key in runs[0][split]}
    return arm


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"
