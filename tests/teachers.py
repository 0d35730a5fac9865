"""Teacher nodes for tests: a tiny real model (untrained, or trained on public Exemplify pages),
private data written from the task generators, canaries, and a signed student that calls the
Teacher service the way a peer would."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from node.app import Node
from node.config import Settings
from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.llm.training import TrainingExample
from node.rpc.agora.v1 import teacher_pb2_grpc
from node.tasks import get_task
from tests.nodes import SignedCaller, loopback_settings

M = TypeVar("M", bound=Message)

TINY_MODEL: dict[str, Any] = {"source": "tiny", "layers": 1, "dim": 32, "heads": 2, "device": "cpu", "dtype": "float32"}
CANARIES = ["the vault code is 4821", "my sister's name is Maren"]


PAGE_SEED = 1234  # public pages are drawn with this seed, the private data with write_private's 7


def pages(task: str, n: int, seed: int = PAGE_SEED) -> list[str]:
    """n public pages in the exact format of the teacher's few-shot prompts: one to three
    "Input: X\\nOutput: Y\\n\\n" shots (teacher.core.shot) of the task's generated examples,
    every third page ending with the task's instruction after "Instruction for this task:", as
    Instruct's prompts end."""
    source = get_task(task)
    examples = source.generate("train", 3 * n, seed)
    rng = random.Random(seed)
    written = []
    for index in range(n):
        page = "".join(
            f"Input: {e.question}\nOutput: {e.rationale}\n\n" for e in rng.sample(examples, rng.randint(1, 3))
        )
        if index % 3 == 0:
            page += f"Instruction for this task: {source.summary}\n"
        written.append(page)
    return written


def train_page_model(out: Path, task: str = "arithmetic", steps: int = 400, seed: int = 0) -> Path:
    """A TINY_MODEL-shaped model of `task` trained on public `pages`, saved to out: it continues
    an Exemplify prompt with "X\\nOutput: Y" (an untrained one never writes "Output:") for about
    9 proposals in 10, and an Instruct prompt with the start of the task's summary. Its context is
    1024 positions, so that a teacher's prompts (fit to the context) stay as long as the pages it
    learned from: at 1,000 tokens and more it loses the format. About 15 s on one CPU thread."""
    spec = TinySpec(layers=TINY_MODEL["layers"], dim=TINY_MODEL["dim"], heads=TINY_MODEL["heads"], max_positions=1024)
    host = ModelHost.build(get_task(task), spec, seed=seed)
    try:
        examples, rng = [TrainingExample("", page) for page in pages(task, 200)], random.Random(seed)
        optimizer = host.make_optimizer(lr=1e-2)
        for _ in range(steps):
            host.train_step(rng.sample(examples, 4), optimizer)
        host.save(out)
    finally:
        host.close()
    return out


def write_private(directory: Path, task: str, n: int, seed: int = 7) -> Path:
    """n train examples of a built-in task as the teacher's private JSONL ({input, output})."""
    path = directory / f"{task}-private.jsonl"
    rows = [{"input": e.question, "output": e.rationale} for e in get_task(task).generate("train", n, seed)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_jsonl_task(directory: Path, n: int) -> tuple[str, Path]:
    """A user's own non-verifiable task (capital-style lookups with made-up answers) and private data."""
    rows = [{"input": f"code word {i}", "output": f"zeta{i * 7 % 100}"} for i in range(n)]
    path = directory / "lookup.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return f"jsonl:{path}", path


def teacher_settings(**sections: dict[str, Any]) -> Settings:
    """A plaintext loopback teacher of arithmetic (private data, canaries) and a jsonl lookup task."""
    directory = Path(tempfile.mkdtemp(prefix="agora-test-teacher-"))
    lookup, lookup_path = write_jsonl_task(directory, 48)
    canaries = directory / "canaries.txt"
    canaries.write_text("\n".join(CANARIES) + "\n", encoding="utf-8")
    base: dict[str, dict[str, Any]] = {
        "node": {"roles": ["teacher"]},
        "model": dict(TINY_MODEL),
        "teacher": {
            "tasks": ["arithmetic", lookup],
            "private_data": {"arithmetic": str(write_private(directory, "arithmetic", 64)), lookup: str(lookup_path)},
            "max_new_tokens": 24,
        },
        "privacy": {"canaries_file": str(canaries), "shards": 8, "epsilon_budget": 50.0},
        "security": {"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return loopback_settings(**base)


def lookup_task(settings: Settings) -> str:
    return next(task for task in settings.teacher.tasks if task.startswith("jsonl:"))


class Student(SignedCaller):
    """A signed caller with a Teacher stub."""

    def __init__(self, channel: aio.Channel, name: str = "student") -> None:
        super().__init__(name)
        self.channel = channel
        self.stub = teacher_pb2_grpc.TeacherStub(channel)

    def sealed_for(self, request: M, method: str) -> M:
        return self.sealed(request, f"/agora.v1.Teacher/{method}")

    async def call(self, method: str, request: M, timeout_s: float = 60) -> Any:
        return await getattr(self.stub, method)(self.sealed_for(request, method), timeout=timeout_s)

    async def released(
        self, method: str, request: M, tries: int = 4, before: Callable[[], None] | None = None, timeout_s: float = 60
    ) -> Any:
        """`call`, asked again as a student would while the teacher answers "try again"
        (UNAVAILABLE) or its guard blocks what its sampling model wrote (FAILED_PRECONDITION): a
        tiny model trained on a task's public pages now and then writes a run of 8 words and
        numbers that a private record of the same generator holds too. `before` runs before each
        try; the last refusal is raised."""
        for attempt in range(1, tries + 1):
            if before is not None:
                before()
            try:
                return await self.call(method, request, timeout_s)
            except aio.AioRpcError as error:
                again = error.code() == grpc.StatusCode.UNAVAILABLE or "leakage guard" in str(error.details())
                if not again or attempt == tries:
                    raise
        raise AssertionError("unreachable: the last try returns or raises")


def blocked_total(node: Node) -> float:
    """agora_lessons_blocked_total over every reason."""
    return sum(
        sample.value
        for metric in node.metrics.registry.collect()
        if metric.name == "agora_lessons_blocked"
        for sample in metric.samples
        if sample.name == "agora_lessons_blocked_total"
    )
