"""YODA against a real teacher node: curriculum order, refinement rounds, and the two controls."""

from __future__ import annotations

import asyncio
from typing import Any

from node.app import Node
from node.llm.tokenizer import encode
from node.llm.training import IGNORE, encode_batch
from node.store import read_rows
from node.tasks import Example, get_task
from node.tasks.base import FEEDBACK
from student.learner import StepResult, Tagged
from student.loop import StudentRun
from student.yoda import REFINED, Question, YodaLearner, curriculum
from tests.nodes import started
from tests.students import student_run, student_settings
from tests.teachers import teacher_settings

TIERS = {"basic": 0, "generalized": 1, "harder": 2}


def test_curriculum_puts_basic_then_generalized_then_harder_by_level() -> None:
    questions = [
        Question("h2", "harder", 2),
        Question("g1", "generalized", 0),
        Question("b", "basic", 0),
        Question("h1", "harder", 1),
        Question("g2", "generalized", 0),
    ]
    assert [q.text for q in curriculum(questions)] == ["b", "g1", "g2", "h1", "h2"]


async def _learn(**student: Any) -> tuple[StudentRun, list[StepResult]]:
    teacher = Node(teacher_settings(node={"name": "teacher"}))
    async with started(teacher) as (address,):
        node = Node(student_settings([address], algorithm="yoda", **student))
        async with started(node):
            run = await student_run(node)
            results: list[StepResult] = []
            await run.run(on_step=lambda step, total, result: results.append(result))
            return run, results


def test_yoda_trains_in_curriculum_order_with_refinement_rounds() -> None:
    # One basic question, 2 generalized, 2 harder levels: 5 examples, batches of 1 keep the order visible.
    run, results = asyncio.run(
        _learn(steps=5, batch_size=1, yoda_questions=1, yoda_generalized=2, yoda_harder_levels=2, yoda_rounds=2)
    )
    kinds = [kind for result in results for kind in result.kinds]
    assert kinds == ["basic", "generalized", "generalized", "harder", "harder"]
    learner = run.learner
    assert isinstance(learner, YodaLearner) and learner.basic_seen == 1
    # An untrained student is wrong, refines once from the feedback, is critiqued again; when the
    # rounds run out the teacher's improvement closes the record.
    assert learner.rounds_used and all(1 <= r <= 2 for r in learner.rounds_used)
    kinds_by_lesson = dict(read_rows(run.settings.node.data_dir, "SELECT lesson_id, kind FROM received_lessons"))
    assert sorted(kinds_by_lesson.values()).count("questions") == 1  # one Pose lesson
    critiques = [k for k in kinds_by_lesson.values() if k == "feedback"]
    assert len(critiques) == sum(learner.rounds_used)  # one critique per round used
    # The Pose lesson is applied with the first posed question's update (step 2), critiques with their own.
    pose_id = next(i for i, k in kinds_by_lesson.items() if k == "questions")
    step_of = dict(read_rows(run.settings.node.data_dir, "SELECT lesson_id, applied_step FROM received_lessons"))
    assert step_of[pose_id] == 2
    assert all(len(r.applied) >= 1 for r in results)


def _text(tagged: Tagged) -> str:
    return "".join(piece for piece, _ in tagged.example.segments())


def test_yoda_records_hold_each_round_of_feedback_and_refinement() -> None:
    async def body() -> None:
        teacher = Node(teacher_settings(node={"name": "teacher"}))
        async with started(teacher) as (address,):
            node = Node(
                student_settings([address], algorithm="yoda", yoda_generalized=1, yoda_harder_levels=1, yoda_rounds=3)
            )
            async with started(node):
                run = await student_run(node)
                learner = run.learner
                assert isinstance(learner, YodaLearner)
                basic = get_task("arithmetic").generate("train", 1, seed=11)[0]
                data = await learner.collect([basic])
                assert [t.kind for t in data] == ["basic", "generalized", "harder"]
                assert data[0].example.prompt.startswith(basic.question)
                critiques = _kinds(run, "feedback")
                assert sorted(learner.rounds_used) == sorted(len(set(t.lessons) & critiques) for t in data)
                for tagged in data:
                    record, rounds = _text(tagged), len(set(tagged.lessons) & critiques)
                    assert 1 <= rounds <= 3 and record.count(f"{FEEDBACK} ") == rounds  # one critique per round
                    # The student refines after each wrong round; the last round's improvement is the teacher's.
                    solved = record.endswith("The final response is also correct.")
                    assert record.count(f"{REFINED} ") == rounds - solved
                assert _kinds(run, "questions") <= set(data[1].lessons)  # Pose applied with the first posed question

    asyncio.run(body())


def _kinds(run: StudentRun, kind: str) -> set[str]:
    return {
        row[0] for row in run.provenance.store.rows("SELECT lesson_id FROM received_lessons WHERE kind = ?", (kind,))
    }


def test_yoda_controls_basic_only_and_gold_only() -> None:
    run, results = asyncio.run(_learn(steps=2, batch_size=4, yoda_control="basic_only"))
    kinds = [kind for result in results for kind in result.kinds]
    assert set(kinds) == {"basic"}
    assert read_rows(run.settings.node.data_dir, "SELECT kind FROM received_lessons WHERE kind = 'questions'") == []

    run, results = asyncio.run(_learn(steps=1, batch_size=8, yoda_questions=1, yoda_control="gold_only"))
    assert results[0].kinds[0] == "basic" and "generalized" in results[0].kinds
    kinds_received = [row[0] for row in read_rows(run.settings.node.data_dir, "SELECT kind FROM received_lessons")]
    assert kinds_received == ["questions"]  # Pose only: no interaction, gold answers instead


def test_refinement_stops_when_the_context_cannot_hold_another_answer() -> None:
    async def body() -> None:
        teacher = Node(teacher_settings(node={"name": "teacher"}))
        async with started(teacher) as (address,):
            node = Node(
                student_settings([address], algorithm="yoda", yoda_generalized=0, yoda_harder_levels=0, yoda_rounds=4)
            )
            async with started(node):
                run = await student_run(node)
                learner = run.learner
                assert isinstance(learner, YodaLearner)
                host = learner.ctx.host
                basic = get_task("arithmetic").generate("train", 1, seed=11)[0]
                first = len(encode(host.tokenizer, learner.ctx.task.prompt(basic.question)))
                # Room for the question and one answer, never for a refinement prompt (a real model, a shorter context).
                host.model.config.max_position_embeddings = first + learner.budget_for(basic.question) + 4
                data = await learner.collect([basic])
                record = _text(data[0])
                assert learner.rounds_used == [1] and record.count(f"{FEEDBACK} ") == 1
                assert record.count(f"{REFINED} ") == 1  # the teacher's improvement closes it, as when out of rounds
                assert task_grades(basic, record.split(f"{REFINED} ")[-1])

    asyncio.run(body())


def task_grades(example: Example, text: str) -> bool:
    return get_task("arithmetic").grade(example, text)


def test_the_curriculum_orders_the_whole_collection_and_shuffled_is_its_control() -> None:
    settings = {"batch_size": 1, "yoda_questions": 3, "yoda_generalized": 1, "yoda_harder_levels": 1}
    _, results = asyncio.run(_learn(steps=9, **settings))
    kinds = [kind for result in results for kind in result.kinds]
    assert kinds == ["basic"] * 3 + ["generalized"] * 3 + ["harder"] * 3  # not one basic question's records at a time
    _, results = asyncio.run(_learn(steps=9, yoda_order="shuffled", **settings))
    shuffled = [kind for result in results for kind in result.kinds]
    assert sorted(shuffled) == sorted(kinds) and shuffled != kinds


def test_wrong_answers_are_context_by_default_and_targets_in_the_ablation() -> None:
    async def learned_wrong_answer(weight: float) -> tuple[str, str]:
        teacher = Node(teacher_settings(node={"name": "teacher"}))
        async with started(teacher) as (address,):
            node = Node(
                student_settings(
                    [address], algorithm="yoda", yoda_generalized=0, yoda_harder_levels=0, yoda_wrong_weight=weight
                )
            )
            async with started(node):
                run = await student_run(node)
                learner = run.learner
                assert isinstance(learner, YodaLearner)
                basic = get_task("arithmetic").generate("train", 1, seed=5)[0]
                (record,) = await learner.collect([basic])
                wrong = _text(record).split(f"\n{FEEDBACK}")[0]  # an untrained student's first answer is wrong
                assert not get_task("arithmetic").grade(basic, wrong)
                host = learner.ctx.host
                batch = encode_batch(host.tokenizer, [record.example], host.max_positions, host.device)
                learned = [
                    int(t) for t, label in zip(batch.input_ids[0], batch.labels[0], strict=True) if label != IGNORE
                ]
                return wrong, str(host.tokenizer.decode(learned, skip_special_tokens=True))

    wrong, learned = asyncio.run(learned_wrong_answer(0.0))
    assert not learned.replace(" ", "").startswith(wrong.replace(" ", "")[:12])  # the wrong answer is not learned
    assert learned.strip().startswith(FEEDBACK)  # learning starts at the teacher's feedback
    wrong, learned = asyncio.run(learned_wrong_answer(1.0))
    assert learned.replace(" ", "").startswith(wrong.replace(" ", "")[:12])


def test_epochs_repeat_the_collection_and_apply_each_lesson_once() -> None:
    _, results = asyncio.run(
        _learn(steps=4, batch_size=2, yoda_questions=1, yoda_generalized=1, yoda_harder_levels=1, yoda_epochs=2.0)
    )
    kinds = [kind for result in results[:3] for kind in result.kinds]
    assert kinds == ["basic", "generalized", "harder"] * 2  # two passes, each in curriculum order
    applied = [lesson for result in results[:3] for lesson in result.applied]
    assert len(applied) == len(set(applied))
    assert results[2].applied == frozenset()  # the second pass's last batch applies nothing new
