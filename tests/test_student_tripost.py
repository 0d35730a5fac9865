"""TriPosT against a real teacher node: the data flow of an iteration, over gRPC."""

from __future__ import annotations

import asyncio
import math

from node.app import Node
from student.learner import FEEDBACK
from student.tripost import TriPosTLearner
from tests.nodes import started
from tests.students import student_run, student_settings
from tests.teachers import teacher_settings


async def _run() -> None:
    teacher = Node(teacher_settings(node={"name": "teacher"}))
    async with started(teacher) as (address,):
        student = Node(student_settings([address], steps=3))
        async with started(student):
            run = await student_run(student)
            summary = await run.run()
            learner = run.learner
            assert isinstance(learner, TriPosTLearner)
            print(summary, learner.collected)


def test_tripost_runs_against_a_teacher() -> None:
    asyncio.run(_run())
