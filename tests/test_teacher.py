"""The six Teacher methods over gRPC against a real node with a tiny real model, private data
and canaries: each lesson's body, provenance (signature, id, store), privacy report and ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from node.app import Node
from node.lessons import check_lesson, kind_of, lesson_id_of
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks import get_task
from tests.nodes import running_node
from tests.teachers import Student, lookup_task, teacher_settings

ARITHMETIC = get_task("arithmetic")


@pytest.fixture(scope="module")
def teacher(page_model: Path) -> Iterator[tuple[Node, str]]:
    """A teacher whose model was trained on public Exemplify pages, with room to write an output."""
    node = Node(teacher_settings(model={"source": str(page_model)}, teacher={"max_new_tokens": 64}))
    with running_node(node) as addresses:
        yield node, addresses.grpc


Scenario = Callable[[Student, bytes], Coroutine[Any, Any, None]]


def talk(address: str, scenario: Scenario) -> None:
    async def main() -> None:
        async with aio.insecure_channel(address) as channel:
            student = Student(channel)
            reply = await student.hello(channel)
            await scenario(student, reply.card.public_key)

    asyncio.run(main())


def stored_lesson(node: Node, lesson_id: str) -> lesson_pb2.Lesson:
    rows = node.store.rows("SELECT lesson FROM lessons WHERE lesson_id = ?", (lesson_id,))
    assert rows, "the teacher did not store the lesson it sent"
    return lesson_pb2.Lesson.FromString(rows[0][0])


def check_provenance(node: Node, lesson: lesson_pb2.Lesson, key: bytes, student: Student, kind: str) -> None:
    check_lesson(lesson, key)
    assert lesson.lesson_id == lesson_id_of(lesson) and kind_of(lesson) == kind
    assert lesson.teacher_node_id == node.identity.node_id and lesson.recipient_node_id == student.node_id
    assert stored_lesson(node, lesson.lesson_id) == lesson
    names = [check.name for check in lesson.privacy.checks]
    assert {"canary", "verbatim_ngram", "levenshtein"} <= set(names) and all(c.passed for c in lesson.privacy.checks)
    assert lesson.privacy.epsilon_budget == node.settings.privacy.epsilon_budget
    assert lesson.model.id and lesson.model.parameter_count > 0


def ledger_status(node: Node, lesson_id: str) -> list[str]:
    return [e.status for e in node.teacher.releaser.ledger.events() if e.lesson_id == lesson_id]  # type: ignore[union-attr]


def test_instruct_releases_a_keyword_aggregated_instruction(teacher: tuple[Node, str]) -> None:
    node, address = teacher

    async def scenario(student: Student, key: bytes) -> None:
        reply = await student.call("Instruct", teacher_pb2.InstructRequest(task="arithmetic", max_tokens=16))
        lesson = reply.lesson
        check_provenance(node, lesson, key, student, "instruction")
        assert lesson.instruction.text.strip()
        report = lesson.privacy
        assert report.mechanism == "dp_icl_keyword" and report.parameters["shards"] == 8
        assert report.epsilon_charged > 0 and report.epsilon_spent >= report.epsilon_charged
        assert ledger_status(node, lesson.lesson_id) == ["released"]

    talk(address, scenario)


def test_exemplify_releases_voted_examples_that_copy_no_private_record(teacher: tuple[Node, str]) -> None:
    node, address = teacher
    private = {record.input for record in node.teacher.private.records("arithmetic")}  # type: ignore[union-attr]

    async def scenario(student: Student, key: bytes) -> None:
        request = teacher_pb2.ExemplifyRequest(task="arithmetic", count=3, temperature=1.0)
        lesson = (await student.released("Exemplify", request)).lesson
        check_provenance(node, lesson, key, student, "examples")
        assert len(lesson.examples.examples) == 3 and all(e.output for e in lesson.examples.examples)
        assert not {e.input for e in lesson.examples.examples} & private
        assert lesson.privacy.mechanism == "gnmax" and lesson.privacy.parameters["queries"] == 3
        assert ledger_status(node, lesson.lesson_id) == ["released"]

    talk(address, scenario)


def test_demonstrate_continues_every_prompt_in_order_without_banned_words(teacher: tuple[Node, str]) -> None:
    node, address = teacher
    prompts = ["Q: (1 + 2) =\nAnswer: ", "Q: (3 * 4) =\nAnswer: ", "Q: (5 - 9) =\nAnswer: "]

    async def scenario(student: Student, key: bytes) -> None:
        sampling = teacher_pb2.SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
        request = teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=prompts, sampling=sampling)
        lesson = (await student.call("Demonstrate", request)).lesson
        check_provenance(node, lesson, key, student, "demonstrations")
        assert [d.prompt for d in lesson.demonstrations.demonstrations] == prompts
        assert lesson.privacy.mechanism == "none" and lesson.privacy.epsilon_charged == 0
        banned = teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=prompts, sampling=sampling)
        banned.banned_words.extend(["a", "e", "s", "1"])
        for demo in (await student.call("Demonstrate", banned)).lesson.demonstrations.demonstrations:
            assert not {"a", "e", "s", "1"} & set(demo.continuation.lower().split())

    talk(address, scenario)


def test_critique_is_scripted_from_the_verifier_for_arithmetic(teacher: tuple[Node, str]) -> None:
    node, address = teacher
    example = ARITHMETIC.solve("Q: ((1 + 2) * (3 - 4)) =")
    assert example is not None
    lines = example.rationale.splitlines()
    wrong = "\n".join([lines[0], lines[1].replace("= 3.", "= 4."), *lines[2:]])

    async def scenario(student: Student, key: bytes) -> None:
        right = teacher_pb2.CritiqueRequest(task="arithmetic", question=example.question, attempt=example.rationale)
        first = (await student.call("Critique", right)).lesson
        check_provenance(node, first, key, student, "feedback")
        assert first.feedback.correct and first.feedback.first_wrong_step == 0 and not first.feedback.improved_answer
        request = teacher_pb2.CritiqueRequest(
            task="arithmetic", question=example.question, attempt=wrong, round=2, previous_lesson_id=first.lesson_id
        )
        second = (await student.call("Critique", request)).lesson
        feedback = second.feedback
        assert not feedback.correct and feedback.first_wrong_step == 2 and "(2)" in feedback.text
        assert feedback.improved_answer.splitlines()[0] == lines[0]  # the correct prefix is kept
        assert ARITHMETIC.verify(example, feedback.improved_answer).correct
        assert list(second.parent_lesson_ids) == [first.lesson_id] and second.privacy.mechanism == "none"

    talk(address, scenario)


def test_critique_without_a_verifier_asks_the_private_shards_through_pate(teacher: tuple[Node, str]) -> None:
    node, address = teacher
    task = lookup_task(node.settings)

    async def scenario(student: Student, key: bytes) -> None:
        request = teacher_pb2.CritiqueRequest(task=task, question="code word 3", attempt="So the answer is zeta21.")
        lesson = (await student.call("Critique", request)).lesson
        check_provenance(node, lesson, key, student, "feedback")
        assert lesson.privacy.mechanism == "gnmax" and lesson.privacy.epsilon_charged > 0
        assert lesson.feedback.text
        assert ledger_status(node, lesson.lesson_id) == ["released"]

    talk(address, scenario)


def test_pose_builds_generalized_and_harder_questions(teacher: tuple[Node, str]) -> None:
    node, address = teacher

    async def scenario(student: Student, key: bytes) -> None:
        request = teacher_pb2.PoseRequest(
            task="arithmetic", question="Q: (2 + 3) =", num_generalized=2, num_harder_levels=2
        )
        lesson = (await student.call("Pose", request)).lesson
        check_provenance(node, lesson, key, student, "questions")
        posed = lesson.questions
        assert posed.basic_question == "Q: (2 + 3) ="
        assert [(q.tier, q.level) for q in posed.questions] == [
            (lesson_pb2.QUESTION_TIER_GENERALIZED, 0),
            (lesson_pb2.QUESTION_TIER_GENERALIZED, 0),
            (lesson_pb2.QUESTION_TIER_HARDER, 1),
            (lesson_pb2.QUESTION_TIER_HARDER, 2),
        ]
        solved = [ARITHMETIC.solve(q.text) for q in posed.questions]
        assert all(s is not None for s in solved)
        steps = [len(s.rationale.splitlines()) for s in solved if s is not None]
        assert steps[3] >= steps[2] >= steps[0]  # harder means at least as many steps
        written = teacher_pb2.PoseRequest(task=lookup_task(node.settings), question="code word 9", num_generalized=2)
        model_posed = (await student.call("Pose", written)).lesson.questions.questions
        assert len(model_posed) == 2 and all(q.text for q in model_posed)

    talk(address, scenario)


def test_score_uses_the_verifier_or_pate_labels(teacher: tuple[Node, str]) -> None:
    node, address = teacher
    example = ARITHMETIC.solve("Q: ((1 + 2) * (3 - 4)) =")
    assert example is not None
    lines = example.rationale.splitlines()
    half = "\n".join([*lines[:2], lines[2].replace("= -1.", "= 5."), *lines[3:]])

    async def scenario(student: Student, key: bytes) -> None:
        items = [
            teacher_pb2.ScoreItem(question=example.question, text=example.rationale),
            teacher_pb2.ScoreItem(question=example.question, text=half),
            teacher_pb2.ScoreItem(question=example.question, text="no idea"),
        ]
        kind = teacher_pb2.SCORE_KIND_VERIFIER
        request = teacher_pb2.ScoreRequest(task="arithmetic", kind=kind, items=items)
        scores = (await student.call("Score", request)).scores
        assert scores[0] == 1.0 and 0 < scores[1] < 1 and scores[2] == 0.0
        before = len(node.teacher.releaser.ledger.events())  # type: ignore[union-attr]
        lookup = [teacher_pb2.ScoreItem(question="code word 1", text="So the answer is zeta7.")]
        request = teacher_pb2.ScoreRequest(task=lookup_task(node.settings), kind=kind, items=lookup)
        assert list((await student.call("Score", request)).scores) in ([0.0], [1.0])
        events = node.teacher.releaser.ledger.events()  # type: ignore[union-attr]
        assert len(events) == before + 1 and events[-1].charge.mechanism == "gnmax"
        assert events[-1].status == "released"
        age = teacher_pb2.ScoreRequest(task="arithmetic", kind=teacher_pb2.SCORE_KIND_AGE, items=items[:1])
        with pytest.raises(aio.AioRpcError) as refused:
            await student.call("Score", age)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "age predictor" in str(
            refused.value.details()
        )

    talk(address, scenario)


@pytest.mark.parametrize(
    ("method", "request_", "words"),
    [
        ("Instruct", teacher_pb2.InstructRequest(task="chess"), "does not teach task 'chess'"),
        ("Exemplify", teacher_pb2.ExemplifyRequest(task="arithmetic", count=0), "count is 0"),
        ("Exemplify", teacher_pb2.ExemplifyRequest(task="arithmetic", count=10_000), "between 1 and 16"),
        ("Demonstrate", teacher_pb2.DemonstrateRequest(task="arithmetic"), "number of prompts is 0"),
        ("Demonstrate", teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=[" "]), "prompts[0] is empty"),
        ("Demonstrate", teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=["x"] * 65), "prompts is 65"),
        ("Critique", teacher_pb2.CritiqueRequest(task="arithmetic", question="Q: (1 + 1) ="), "attempt is empty"),
        ("Critique", teacher_pb2.CritiqueRequest(task="arithmetic", question="q", attempt="a", round=9), "round"),
        ("Pose", teacher_pb2.PoseRequest(task="arithmetic", question="Q: (1 + 1) ="), "between 1 and 16"),
        ("Score", teacher_pb2.ScoreRequest(task="arithmetic", kind=teacher_pb2.SCORE_KIND_VERIFIER), "items is 0"),
        ("Score", teacher_pb2.ScoreRequest(task="", kind=teacher_pb2.SCORE_KIND_VERIFIER), "task is empty"),
    ],
)
def test_bad_requests_get_invalid_argument_naming_the_field(
    teacher: tuple[Node, str], method: str, request_: Any, words: str
) -> None:
    node, address = teacher
    before = len(node.teacher.releaser.ledger.events())  # type: ignore[union-attr]

    async def scenario(student: Student, key: bytes) -> None:
        request = type(request_)()
        request.CopyFrom(request_)
        with pytest.raises(aio.AioRpcError) as refused:
            await student.call(method, request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in str(refused.value.details())

    talk(address, scenario)
    assert len(node.teacher.releaser.ledger.events()) == before  # type: ignore[union-attr]
