"""GPU smoke test: the CUDA path (device cuda, bfloat16) end to end, on a machine that has one.

Builds a tiny model on the GPU in bf16, generates (batched and concurrent), scores, takes
training steps, saves and reloads, and prints what it saw. Exits 1 with a sentence when no
CUDA device is visible. Run it whenever a GPU is available: `python -m bench.gpu_smoke`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import torch

from node.llm import ModelHost, SamplingParams, TinySpec, resolve_placement
from node.llm.sft import SFTConfig, evaluate, train_sft
from node.tasks import get_task


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device is visible; nothing to check", file=sys.stderr)
        return 1
    placement = resolve_placement("cuda", "bfloat16")
    task = get_task("arithmetic")
    host = ModelHost.build(task, TinySpec(), placement)
    gpu = torch.cuda.get_device_name()
    print(f"model: {host.parameter_count / 1e6:.2f}M parameters on {placement.describe()} ({gpu})")
    assert next(host.model.parameters()).dtype == torch.bfloat16 and next(host.model.parameters()).is_cuda

    prompts = [task.prompt(e.question) for e in task.generate("seen", 16, 0)]
    params = SamplingParams(max_new_tokens=32)
    sequential = [host.generate_sync([p], [params])[0].token_ids for p in prompts]

    async def together() -> list[tuple[int, ...]]:
        results = await asyncio.gather(*(host.generate([p], params) for p in prompts))
        return [r[0].token_ids for r in results]

    concurrent = asyncio.run(together())
    agree = sum(a == b for a, b in zip(sequential, concurrent, strict=True))
    print(f"generation: 16 concurrent vs sequential greedy outputs agree on {agree}/16 (bf16 may differ in ties)")

    scores = host.score_sync(prompts[:4], ["(Final response) So the answer is 1."] * 4)
    assert all(torch.isfinite(torch.tensor(s.logprobs)).all() for s in scores)
    print(f"scoring: mean log-prob {sum(s.mean for s in scores) / 4:.3f}")

    started = time.perf_counter()
    report = train_sft(host, task, SFTConfig(steps=200, eval_every=0, eval_n=32))
    print(
        f"training: 200 steps in {time.perf_counter() - started:.1f}s, loss {report.last_loss:.3f}, "
        f"accuracy {report.final_accuracy}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        host.save(Path(tmp) / "m")
        loaded = ModelHost.load(Path(tmp) / "m", placement)
        ids = torch.tensor([[1, 5, 6, 7]], device=placement.device)
        assert torch.equal(host.model(input_ids=ids).logits, loaded.model(input_ids=ids).logits)
    print(f"save/load: logits identical; eval {evaluate(loaded, task, n=16)}")
    print("gpu_smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
