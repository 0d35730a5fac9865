"""System: what DP-SGD costs per training step, by Opacus's per-sample gradient method.

The same tiny Llama (untied embeddings, as ghost clipping needs) and the same batches of gold
arithmetic rationales are trained plain (AdamW) and under Opacus DP-SGD with per-sample
gradients from module hooks (`hooks`, what `agora teacher dp-train` and the student's DP warm-up
use), from functorch's vmap (`functorch`) and with ghost clipping (`ghost`: per-sample gradient
norms without the per-sample gradients, two backward passes). Each mode runs warm-up steps, then
timed steps; the figure is the median step time over plain's (goal: <= 1.5x). Fixed batch size
(no Poisson sampling) so that every mode does the same work; noise 1.0, clip 1.0.

    python -m bench.dp_sgd            # full: 4 layers, dim 128, batch 16, 30 timed steps per mode
    python -m bench.dp_sgd --quick    # 2 layers, dim 64, batch 8, 10 timed steps (well under a minute)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from bench.common import markdown_table, write_results
from bench.goals import Goal, goals_json
from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.llm.placement import resolve_placement
from node.llm.training import IGNORE, TrainingBatch, TrainingExample, encode_batch
from node.privacy.dp_sgd import per_example_loss
from node.tasks import get_task

MODES = ("plain", "hooks", "functorch", "ghost")
FULL = {"layers": 4, "dim": 128, "batch": 16, "warmup": 3, "steps": 30}
QUICK = {"layers": 2, "dim": 64, "batch": 8, "warmup": 2, "steps": 10}


def batches(host: ModelHost, batch_size: int, count: int) -> list[TrainingBatch]:
    task = get_task("arithmetic")
    problems = task.generate("train", batch_size * count, seed=11)
    examples = [TrainingExample(task.prompt(e.question), e.rationale) for e in problems]
    return [
        encode_batch(host.tokenizer, examples[i : i + batch_size], host.max_positions, host.device)
        for i in range(0, len(examples), batch_size)
    ]


def _timed(steps: list[TrainingBatch], warmup: int, step: Callable[[TrainingBatch], None]) -> list[float]:
    times = []
    for i, batch in enumerate(steps):
        began = time.perf_counter()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - began)
    return times


def _inputs(batch: TrainingBatch) -> dict[str, torch.Tensor]:
    # Opacus on position-aware models wants contiguous [B, T] position ids (see node/privacy/dp_sgd.py).
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}


def _loss(logits: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
    # Agora's DP-SGD loss: each sequence's own mean, so one record's gradient does not depend on the others.
    return per_example_loss(logits, batch.labels, batch.weights).mean()


def run_mode(mode: str, base: torch.nn.Module, steps: list[TrainingBatch], warmup: int) -> list[float]:
    model = copy.deepcopy(base).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if mode == "plain":

        def plain(batch: TrainingBatch) -> None:
            optimizer.zero_grad(set_to_none=True)
            _loss(model(**_inputs(batch)).logits, batch).backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        return _timed(steps, warmup, plain)

    loader = DataLoader(TensorDataset(torch.arange(len(steps))), batch_size=1)  # only its length matters here
    engine = PrivacyEngine(accountant="rdp")
    kwargs: dict[str, Any] = {"grad_sample_mode": mode}
    if mode == "ghost":
        kwargs["criterion"] = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    made = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        **kwargs,
    )
    private, dp_optimizer = made[0], made[1]
    criterion = made[2] if mode == "ghost" else None

    def private_step(batch: TrainingBatch) -> None:
        dp_optimizer.zero_grad(set_to_none=True)
        logits = private(**_inputs(batch)).logits
        if criterion is not None:  # ghost: per-sequence loss, two backward passes inside .backward()
            shifted, targets = logits[:, :-1].contiguous(), batch.labels[:, 1:].contiguous()
            shape = (shifted.size(0), shifted.size(1))
            loss = criterion(shifted.view(-1, shifted.size(-1)), targets.view(-1), shape=shape)
        else:
            loss = _loss(logits, batch)
        loss.backward()
        dp_optimizer.step()

    return _timed(steps, warmup, private_step)


def run(quick: bool) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    torch.manual_seed(0)
    task = get_task("arithmetic")
    spec = TinySpec(layers=plan["layers"], dim=plan["dim"], heads=4)
    host = ModelHost.build(task, spec, resolve_placement("cpu", "float32"))
    steps = batches(host, plan["batch"], plan["warmup"] + plan["steps"])
    figures: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for mode in MODES:
            try:
                times = run_mode(mode, host.model, steps, plan["warmup"])
                figures[mode] = {
                    "median_s": statistics.median(times),
                    "p90_s": sorted(times)[int(0.9 * (len(times) - 1))],
                }
            except Exception as exc:  # a mode Opacus cannot run on this model: recorded, not hidden
                figures[mode] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{mode}: {figures[mode]}", flush=True)
    plain = figures["plain"].get("median_s")
    for figure in figures.values():
        if "median_s" in figure and plain:
            figure["over_plain"] = figure["median_s"] / plain
    return {"quick": quick, "plan": plan, "parameters": host.parameter_count, "modes": figures, "goal": 1.5}


def table(result: dict[str, Any]) -> str:
    rows = []
    for mode, figure in result["modes"].items():
        if "error" in figure:
            rows.append([mode, "-", "-", "-", figure["error"]])
            continue
        ratio = figure.get("over_plain")
        verdict = "-" if mode == "plain" or ratio is None else ("met" if ratio <= result["goal"] else "missed")
        over = "1.00x" if mode == "plain" else f"{ratio:.2f}x"
        rows.append([mode, f"{1000 * figure['median_s']:.1f}", f"{1000 * figure['p90_s']:.1f}", over, verdict])
    plan = result["plan"]
    note = (
        f"Tiny Llama, {plan['layers']} layers x dim {plan['dim']} ({result['parameters'] / 1e6:.2f}M parameters), "
        f"batch {plan['batch']}, {plan['steps']} timed steps after {plan['warmup']} warm-up, CPU float32."
    )
    return markdown_table(["mode", "median ms/step", "p90 ms/step", "over plain", "goal <= 1.5x"], rows) + "\n\n" + note


def goals(result: dict[str, Any]) -> list[Goal]:
    """One goal per DP-SGD mode: its median step time over plain's, judged as the table judges it.
    A mode that failed (or a plain run that did) has no ratio and so misses. One median per mode,
    no repeated runs: no 95% interval."""
    limit = result["goal"]
    found = []
    for mode, figure in result["modes"].items():
        if mode == "plain":
            continue
        ratio = figure.get("over_plain")
        met = ratio is not None and ratio <= limit
        found.append(Goal(f"dp_sgd_{mode}_over_plain", ratio, f"<= {limit:g}x plain step time", met))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dp_sgd", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model and fewer steps (well under a minute)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    text = table(result)
    write_results("dp_sgd-quick" if args.quick else "dp_sgd", {**result, "goals": goals_json(goals(result))}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
