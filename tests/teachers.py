"""Teacher nodes for tests: a tiny real model, private data written from the task generators,
canaries, and a signed student that calls the Teacher service the way a peer would."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpc import aio

from node.config import Settings
from node.rpc.agora.v1 import teacher_pb2_grpc
from node.tasks import get_task
from tests.nodes import SignedCaller, loopback_settings

M = TypeVar("M", bound=Message)

TINY_MODEL: dict[str, Any] = {"source": "tiny", "layers": 1, "dim": 32, "heads": 2, "device": "cpu", "dtype": "float32"}
CANARIES = ["the vault code is 4821", "my sister's name is Maren"]


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
