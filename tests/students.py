"""Student nodes for tests: a student Node joined to teacher nodes, and its learning run."""

from __future__ import annotations

from typing import Any

from node.app import Node
from node.config import Settings
from node.peers.view import PeerState
from student.build import build_student
from student.loop import StudentRun
from tests.nodes import eventually, loopback_settings
from tests.teachers import TINY_MODEL

FAST_STUDENT: dict[str, Any] = {
    "task": "arithmetic",
    "steps": 4,
    "eval_every": 2,
    "checkpoint_every": 2,
    "batch_size": 4,
    "eval_n": 2,
    "lesson_timeout_s": 60.0,
    "teacher_wait_s": 5.0,
    "tripost_questions": 4,
}


def student_settings(seeds: list[str], **student: Any) -> Settings:
    """A plaintext loopback student of arithmetic with a tiny model, joined through `seeds`."""
    return loopback_settings(
        node={"roles": ["student"], "name": "student"},
        model=dict(TINY_MODEL),
        peers={"seeds": seeds},
        student={**FAST_STUDENT, **student},
    )


async def student_run(node: Node, teachers: int = 1) -> StudentRun:
    """The node's learning run, once `teachers` teachers are alive in its view."""
    await eventually(
        lambda: sum(node_pb_teaches(p) for p in node.view.peers(PeerState.ALIVE)) >= teachers,
        timeout_s=20,
        what=f"{teachers} teachers alive in the student's view",
    )
    return build_student(node.settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)


def node_pb_teaches(peer: Any) -> bool:
    return bool(peer.card.teaches)
