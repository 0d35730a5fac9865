"""Social Learning against two real teacher nodes: lessons from each, the voting aggregator, and
the lessons used in context and for fine-tuning."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.app import Node
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from student.learner import StepResult
from student.loop import StudentRun
from student.social import SocialLearner, mean_ranks
from tests.nodes import started
from tests.students import student_run, student_settings
from tests.teachers import teacher_settings

# Room for "X\nOutput: Y"; the guard blocks only long verbatim runs (every arithmetic rationale
# shares 8-word runs with some private one, which would block a lesson now and then).
FAST_TEACHER = {"max_new_tokens": 64, "examples_per_shard": 2}
FAST_PRIVACY = {"shards": 4, "ngram_block": 48}


def test_mean_ranks_favours_what_most_voters_rank_high() -> None:
    votes = [[-1.0, -3.0, -2.0], [-1.5, -1.0, -4.0], [-0.5, -2.0, -2.5]]
    assert mean_ranks(votes) == [1 / 3, 1.0, 5 / 3]


def _teacher(name: str, model: Path) -> Node:
    """A teacher of the page-trained tiny model (conftest's `page_model`), which writes usable examples."""
    settings = teacher_settings(
        node={"name": name}, model={"source": str(model)}, teacher=FAST_TEACHER, privacy=FAST_PRIVACY
    )
    return Node(settings)


async def _learn(body: object, model: Path, **student: object) -> None:
    first, second = _teacher("teacher-a", model), _teacher("teacher-b", model)
    async with started(first, second) as addresses:
        node = Node(student_settings(addresses, algorithm="social", **student))
        async with started(node):
            run = await student_run(node, teachers=2)
            await body(run)  # type: ignore[operator]


def test_social_learning_asks_every_teacher_and_keeps_the_best_voted_examples(page_model: Path) -> None:
    async def body(run: StudentRun) -> None:
        results: list[StepResult] = []
        await run.run(on_step=lambda step, total, result: results.append(result))
        learner = run.learner
        assert isinstance(learner, SocialLearner)
        pool = run.ctx.teachers
        assert sorted(pool.stats.by_teacher) == ["teacher-a", "teacher-b"]
        rows = run.provenance.store.rows(
            "SELECT lesson_id, teacher, kind, lesson FROM received_lessons ORDER BY at_unix_ms"
        )
        kinds = sorted(kind for _, _, kind, _ in rows)
        assert kinds.count("instruction") + kinds.count("examples") == len(rows) and "examples" in kinds
        # Recount the vote: each teacher scores every candidate example; keep the best mean rank.
        candidates = [
            (example.input, example.output, lesson_id)
            for lesson_id, _, kind, blob in rows
            if kind == "examples"
            for example in lesson_pb2.Lesson.FromString(blob).examples.examples
        ]
        assert len(candidates) > 2
        items = [teacher_pb2.ScoreItem(question=run.ctx.task.prompt(i), text=o) for i, o, _ in candidates]
        votes = []
        for teacher in {t for _, t, _, _ in rows}:
            request = teacher_pb2.ScoreRequest(task="arithmetic", kind=teacher_pb2.SCORE_KIND_LIKELIHOOD, items=items)
            scores = await pool.score(teacher, request)
            assert scores is not None and all(s <= 0 for s in scores)
            votes.append(scores)
        ranks = mean_ranks(votes)
        best = sorted(range(len(candidates)), key=lambda i: (ranks[i], i))[:2]
        assert learner.examples == [(candidates[i][0], candidates[i][1]) for i in best]
        # The kept lessons are applied by the first update; the others are set aside, none lost.
        kept = {candidates[i][2] for i in best}
        assert kept <= results[0].applied
        assert results[0].applied | results[0].discarded == {lesson_id for lesson_id, *_ in rows}
        # Both uses: the kept examples are in the prompt, and updates trained on them.
        prefix = learner.prompt_prefix()
        assert all(f"{run.ctx.task.prompt(i)}{o}" in prefix for i, o in learner.examples)
        assert all(r.loss is not None and r.kinds == ("synthetic", "synthetic") for r in results)

    asyncio.run(_learn(body, page_model, steps=2, social_examples=2, social_examples_per_teacher=2, batch_size=2))


def test_social_learning_in_context_only_trains_nothing(page_model: Path) -> None:
    async def body(run: StudentRun) -> None:
        weights = [p.detach().clone() for p in run.ctx.host.model.parameters()]
        summary = await run.run()
        assert summary.steps_done == 1 and summary.finished_early and summary.last_loss is None
        assert all((a == b).all() for a, b in zip(weights, run.ctx.host.model.parameters(), strict=True))
        learner = run.learner
        assert isinstance(learner, SocialLearner) and len(learner.examples) == 2
        assert learner.prompt_prefix().count("Answer: ") >= 2  # the kept examples, before every question

    asyncio.run(
        _learn(
            body,
            page_model,
            steps=3,
            social_use="in_context",
            social_aggregator="random",
            social_examples=2,
            social_examples_per_teacher=2,
        )
    )
