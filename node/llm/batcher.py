"""Batching of concurrent generation requests.

Requests that arrive within a short window of each other (and while the previous batch is
still running) are generated together in one `generate_batch` call on the model's worker
thread, up to a batch size. A request is never split across batches, so its prompts share one
call; a request larger than the batch size runs alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from node.llm.sampling import Generation, SamplingParams

RunBatch = Callable[[Sequence[str], Sequence[SamplingParams]], list[Generation]]


@dataclass
class _Request:
    prompts: Sequence[str]
    params: Sequence[SamplingParams]
    future: asyncio.Future[list[Generation]]


class GenerationBatcher:
    """Collects `submit` calls for `window_s` and runs them as one batch on `executor`."""

    def __init__(self, run_batch: RunBatch, executor: Executor, window_s: float = 0.005, max_batch_size: int = 16):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self._executor = executor
        self.window_s = window_s
        self.max_batch_size = max_batch_size
        self._queue: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0  # for tests and benchmarks: how many model calls were made

    async def submit(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Generation]:
        """Generations for prompts, in order, possibly computed together with other callers' prompts."""
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        if not prompts:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(prompts, params, loop.create_future())
        self._queue.append(request)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await request.future

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].prompts) <= self.max_batch_size):
            request = self._queue.pop(0)
            if request.future.done():  # the caller gave up (cancelled); skip its work
                continue
            batch.append(request)
            size += len(request.prompts)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            await asyncio.sleep(self.window_s)  # let concurrent callers join this batch
            batch = self._take_batch()
            if not batch:
                continue
            prompts = [p for request in batch for p in request.prompts]
            params = [p for request in batch for p in request.params]
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, prompts, params)
            except Exception as exc:  # every caller in the batch gets the error
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            self.batches_run += 1
            start = 0
            for request in batch:
                end = start + len(request.prompts)
                if not request.future.done():
                    request.future.set_result(results[start:end])
                start = end
