"""The student's provenance and checkpoints on real SQLite files and safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.llm.training import TrainingExample
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.store import Store
from node.tasks import get_task
from student import checkpoints
from student.provenance import LessonReused, Provenance, request_key


def _lesson(n: int) -> lesson_pb2.Lesson:
    return lesson_pb2.Lesson(lesson_id=f"{n:064x}", teacher_node_id="t" * 64, task="arithmetic")


def test_a_lesson_is_applied_once_and_a_rewind_releases_lost_updates(tmp_path: Path) -> None:
    provenance = Provenance(Store(tmp_path / "agora.db"))
    for n in range(4):
        provenance.receive(f"key{n % 2}", _lesson(n))
    provenance.record_update(1, "tripost", 1.0, 2, {_lesson(0).lesson_id}, {_lesson(1).lesson_id})
    with pytest.raises(LessonReused):
        provenance.record_update(2, "tripost", 1.0, 2, {_lesson(2).lesson_id, _lesson(0).lesson_id})
    assert provenance.applied_by(2) == []  # the failed update wrote nothing, not even lesson 2
    provenance.record_update(2, "tripost", 0.5, 2, {_lesson(2).lesson_id})
    assert provenance.summary().applied == 2 and provenance.summary().discarded == 1
    # Unused lessons of a request are what a replay gets back; used ones are not.
    assert [lesson.lesson_id for lesson in provenance.stored("key1")] == [_lesson(3).lesson_id]
    assert provenance.rewind(1) == 1  # update 2 was lost with a crash: lesson 2 is free again
    assert provenance.summary().updates == 1
    assert [lesson.lesson_id for lesson in provenance.stored("key0")] == [_lesson(2).lesson_id]
    with pytest.raises(LessonReused):
        provenance.record_update(3, "tripost", 0.1, 1, {"f" * 64})  # never received


def test_the_request_key_ignores_the_envelope_but_not_the_request() -> None:
    request = teacher_pb2.CritiqueRequest(task="arithmetic", question="Q", attempt="A", round=1)
    sealed = teacher_pb2.CritiqueRequest()
    sealed.CopyFrom(request)
    sealed.envelope.nonce = b"fresh"
    other = teacher_pb2.CritiqueRequest(task="arithmetic", question="Q", attempt="B", round=1)
    assert request_key("Critique", request) == request_key("Critique", sealed)
    assert request_key("Critique", request) != request_key("Critique", other)
    assert request_key("Critique", request) != request_key("Pose", request)


def test_a_checkpoint_restores_weights_and_optimizer_exactly(tmp_path: Path) -> None:
    host = ModelHost.build(get_task("arithmetic"), TinySpec(layers=1, dim=16, heads=2))
    optimizer = host.make_optimizer(1e-2)
    example = [TrainingExample("Q: (1 + 2) =\nAnswer: ", "(Final response) So the answer is 3.")]
    for _ in range(2):
        host.train_step(example, optimizer)
    saved = checkpoints.save(tmp_path, 2, host, optimizer, {"learner": {"queue": []}})
    assert checkpoints.latest(tmp_path) == saved and json.loads((saved.path / "state.json").read_text())["step"] == 2
    restored = ModelHost.load(saved.model_dir)
    restored_optimizer = restored.make_optimizer(1e-2)
    checkpoints.restore_optimizer(saved, restored_optimizer)
    # One more identical step on both gives identical weights: the optimizer state came back whole.
    host.train_step(example, optimizer)
    restored.train_step(example, restored_optimizer)
    for a, b in zip(host.model.parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for step in (4, 6, 8):
        checkpoints.save(tmp_path, step, host, optimizer, {})
    assert [c.step for c in checkpoints.checkpoints(tmp_path)] == [6, 8]  # the two newest are kept
    (tmp_path / ".step-000010.tmp-dead").mkdir()  # a crash mid-write leaves a staging dir: never "latest"
    assert checkpoints.latest(tmp_path) is not None and checkpoints.latest(tmp_path).step == 8  # type: ignore[union-attr]
