"""Serving speed of the model host, and what a tiny teacher learns in a fixed time.

Three figures (recorded, not asserted):
1. throughput of 16 concurrent requests through the batcher vs the same 16 one after another
   (goal: >= 4x);
2. ModelHost overhead over raw `model.generate` for the same greedy work (goal: <= 5%);
3. held-out accuracy of a tiny arithmetic teacher after `agora model train` for 10 minutes.

    python -m bench.serving            # full: 10-minute training run
    python -m bench.serving --quick    # about 3 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import torch

from bench.common import markdown_table, write_results
from bench.goals import Goal, goals_json
from node.llm import ModelHost, SamplingParams, TinySpec, resolve_placement
from node.llm.sft import SFTConfig, train_sft
from node.llm.tokenizer import encode
from node.tasks import get_task

CONCURRENT = 16
SPEEDUP_GOAL = 4.0  # batched over sequential tokens/s
OVERHEAD_GOAL = 0.05  # ModelHost over raw model.generate, as a fraction


def _prompts(n: int) -> list[str]:
    task = get_task("arithmetic")
    return [task.prompt(e.question) for e in task.generate("seen", n, seed=11)]


def batched_vs_sequential(host: ModelHost, new_tokens: int, repeats: int) -> dict[str, float]:
    """Tokens per second: 16 concurrent callers (batched) vs the same 16 calls one at a time."""
    prompts = _prompts(CONCURRENT)
    params = SamplingParams(max_new_tokens=new_tokens)

    async def sequential() -> int:
        tokens = 0
        for prompt in prompts:
            tokens += len((await host.generate([prompt], params))[0].token_ids)
        return tokens

    async def concurrent() -> int:
        results = await asyncio.gather(*(host.generate([p], params) for p in prompts))
        return sum(len(r[0].token_ids) for r in results)

    figures: dict[str, list[float]] = {"sequential": [], "batched": []}
    for _ in range(repeats):
        for name, scenario in (("sequential", sequential), ("batched", concurrent)):
            started = time.perf_counter()
            tokens = asyncio.run(scenario())
            figures[name].append(tokens / (time.perf_counter() - started))
    seq, bat = statistics.median(figures["sequential"]), statistics.median(figures["batched"])
    return {"sequential_tokens_per_s": seq, "batched_tokens_per_s": bat, "speedup": bat / seq}


def overhead_vs_raw_generate(host: ModelHost, new_tokens: int, repeats: int) -> dict[str, Any]:
    """Wall time of host.generate_sync vs model.generate on the same 16 left-padded prompts, greedy."""
    prompts = _prompts(CONCURRENT)
    encoded = [encode(host.tokenizer, p) for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = host.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=host.device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=host.device)
    params = [SamplingParams(max_new_tokens=new_tokens)] * len(prompts)

    def raw() -> list[list[int]]:
        with torch.inference_mode():
            out = host.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False
            )
        return [row[width:].tolist() for row in out]

    def hosted() -> list[list[int]]:
        return [list(g.token_ids) for g in host.generate_sync(prompts, params)]

    raw(), hosted()  # warm-up
    times: dict[str, list[float]] = {"raw": [], "host": []}
    for _ in range(repeats):
        for name, run in (("raw", raw), ("host", hosted)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    same = [r[: len(h)] == h for r, h in zip(raw(), hosted(), strict=True)]
    raw_s, host_s = statistics.median(times["raw"]), statistics.median(times["host"])
    return {"raw_s": raw_s, "host_s": host_s, "overhead": host_s / raw_s - 1, "same_tokens": all(same)}


def teacher_in_fixed_time(minutes: float, spec: TinySpec, placement: Any) -> dict[str, Any]:
    """What `agora model train` reaches on arithmetic in `minutes` (its defaults otherwise)."""
    task = get_task("arithmetic")
    host = ModelHost.build(task, spec, placement)
    config = SFTConfig(steps=100_000, time_limit_s=minutes * 60, eval_every=0, eval_n=100)
    report = train_sft(host, task, config, on_step=lambda step, loss: None)
    final = report.history[-1]
    return {
        "minutes": minutes,
        "steps": report.steps,
        "parameters": host.parameter_count,
        "spec": {"family": spec.family, "layers": spec.layers, "dim": spec.dim, "heads": spec.heads},
        "final_train_loss": final["train_loss"],
        "seen_accuracy": final["seen"],
        "unseen_accuracy": final["unseen"],
    }


def goals(result: dict[str, Any]) -> list[Goal]:
    """The two judged figures; the teacher's accuracy is recorded only (no target), so it is no goal.
    A single run of medians over repeats: no spread across runs to form an interval from."""
    speedup = float(result["batching"]["speedup"])
    overhead = float(result["overhead"]["overhead"])
    return [
        Goal("batched_speedup", speedup, f">= {SPEEDUP_GOAL:g}x", speedup >= SPEEDUP_GOAL),
        Goal("host_overhead", 100 * overhead, f"<= {100 * OVERHEAD_GOAL:g}%", overhead <= OVERHEAD_GOAL),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes instead of about 13")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], mps (default auto)")
    parser.add_argument("--train-minutes", type=float, help="training budget (default 10, quick 1)")
    args = parser.parse_args(argv)
    placement = resolve_placement(args.device, "auto")
    spec = TinySpec()
    host = ModelHost.build(get_task("arithmetic"), spec, placement)
    repeats, new_tokens = (2, 32) if args.quick else (5, 64)
    print(f"[serving] {host.parameter_count / 1e6:.2f}M-parameter model on {placement.describe()}", file=sys.stderr)
    batching = batched_vs_sequential(host, new_tokens, repeats)
    print(f"[serving] batched vs sequential: {batching['speedup']:.2f}x", file=sys.stderr)
    overhead = overhead_vs_raw_generate(host, new_tokens, repeats)
    print(f"[serving] host overhead over model.generate: {overhead['overhead']:+.1%}", file=sys.stderr)
    minutes = args.train_minutes or (1.0 if args.quick else 10.0)
    print(f"[serving] training a tiny arithmetic teacher for {minutes:g} min ...", file=sys.stderr)
    teacher = teacher_in_fixed_time(minutes, spec, placement)
    rows = [
        [
            "16 concurrent requests, batched vs sequential",
            f"{batching['speedup']:.2f}x",
            ">= 4x",
            f"{batching['batched_tokens_per_s']:.0f} vs {batching['sequential_tokens_per_s']:.0f} tokens/s",
        ],
        [
            "ModelHost overhead over model.generate",
            f"{overhead['overhead']:+.1%}",
            "<= 5%",
            f"{overhead['host_s'] * 1000:.0f} vs {overhead['raw_s'] * 1000:.0f} ms"
            + f"; same tokens: {overhead['same_tokens']}",
        ],
        [
            f"tiny teacher after {minutes:g} min of `agora model train`",
            f"seen {teacher['seen_accuracy']:.1%}, unseen {teacher['unseen_accuracy']:.1%}",
            "recorded",
            f"{teacher['steps']} steps, {teacher['parameters'] / 1e6:.2f}M parameters",
        ],
    ]
    table = markdown_table(["figure", "result", "goal", "detail"], rows)
    name = "serving-quick" if args.quick else "serving"
    config = {"quick": args.quick, "new_tokens": new_tokens, "repeats": repeats, "seeds": {"prompts": 11, "model": 0}}
    result: dict[str, Any] = {"config": config, "batching": batching, "overhead": overhead, "teacher": teacher}
    path = write_results(name, {**result, "goals": goals_json(goals(result))}, table)
    print(table)
    print(f"[serving] results in {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
