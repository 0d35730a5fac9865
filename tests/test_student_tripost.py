"""TriPosT against a real teacher node: critique rounds, the 1.5 : 1 : 1 rebalancing and the
1.5 loss weight on exactly the tokens from "Feedback:" on."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest

from node.app import Node
from node.llm.schedule import LRSchedule
from node.llm.training import IGNORE, encode_batch
from node.tasks import get_task
from node.tasks.base import ALL_CORRECT, FEEDBACK
from student.learner import StepResult, Tagged
from student.loop import StudentRun
from student.tripost import Trajectory, TriPosTLearner, corrupt, rebalance
from tests.nodes import started
from tests.students import student_run, student_settings
from tests.teachers import teacher_settings


def _tagged(kind: str, n: int) -> list[Tagged]:
    from node.llm.training import TrainingExample

    return [Tagged(TrainingExample("q", f"{kind}{i}"), (f"{kind}{i}",), kind) for i in range(n)]


@pytest.mark.parametrize(
    ("n_imp", "n_non", "n_gold", "kept"), [(3, 5, 5, 2), (6, 10, 10, 4), (1, 0, 3, 1), (0, 4, 4, 0)]
)
def test_rebalance_keeps_improvement_non_improvement_and_gold_at_1_5_to_1_to_1(
    n_imp: int, n_non: int, n_gold: int, kept: int
) -> None:
    non_improvement = _tagged("non_improvement", n_non)
    data = rebalance(_tagged("improvement", n_imp), non_improvement, _tagged("gold", n_gold), random.Random(1))
    counts = {k: sum(t.kind == k for t in data) for k in ("improvement", "non_improvement", "gold")}
    assert counts == {"improvement": n_imp, "non_improvement": min(kept, n_non), "gold": min(kept, n_gold)}
    assert kept == math.ceil(n_imp / 1.5)
    sampled = [t for t in data if t.kind == "non_improvement"]
    assert len(set(sampled)) == len(sampled) and set(sampled) <= set(non_improvement)


async def _with_student(body: Any, **student: Any) -> None:
    teacher = Node(teacher_settings(node={"name": "teacher"}))
    async with started(teacher) as (address,):
        node = Node(student_settings([address], **student))
        async with started(node):
            run = await student_run(node)
            await body(run, teacher)


def test_tripost_iteration_data_flow_over_grpc() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        results: list[StepResult] = []
        summary = await run.run(on_step=lambda step, total, result: results.append(result))
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        assert summary.steps_done == 3 and len(results) == 3
        # Every iteration's data follows the ratio: all improvements, ceil(n_imp / 1.5) of the others.
        for row in learner.collected:
            keep = math.ceil(row["improvement"] / 1.5)
            assert row["gold"] == keep and row["non_improvement"] <= keep
            assert row["improvement"] + row["non_improvement"] <= row["trajectories"]
        # Provenance: each update applied exactly the critiques of the examples it trained on,
        # and every critique the student holds came from the teacher, addressed to it.
        applied = [set(run.provenance.applied_by(step)) for step in (1, 2, 3)]
        assert [a == set(r.applied) for a, r in zip(applied, results, strict=True)] == [True] * 3
        sent = {
            row[0]
            for row in teacher.store.rows(
                "SELECT lesson_id FROM lessons WHERE recipient = ?", (run.ctx.teachers.own_node_id,)
            )
        }
        assert set().union(*applied) <= sent and sent
        assert summary.lessons is not None and summary.lessons.received == len(sent)

    asyncio.run(_with_student(body, steps=3, tripost_questions=3, batch_size=2))


def test_a_wrong_attempt_is_critiqued_until_correct_keeping_the_correct_prefix() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        task = get_task("arithmetic")
        example = task.generate("train", 1, seed=3)[0]
        gold = example.rationale.splitlines()
        wrong = "\n".join([gold[0], "(2) Let's calculate 1 = 2.", *gold[2:]])
        trajectory = await learner.edit(example, wrong)
        assert isinstance(trajectory, Trajectory) and trajectory.correct
        assert len(trajectory.rounds) == 1 and len(trajectory.lessons) == 2  # a critique, then "all correct"
        feedback, improved = trajectory.rounds[0]
        assert "(2)" in feedback and improved.splitlines()[0] == gold[0]  # the correct prefix is kept
        assert task.verify(example, improved).correct
        correct = await learner.edit(example, example.rationale)
        assert correct is not None and correct.correct and correct.rounds == [] and len(correct.lessons) == 1

        # The post-processed improvement example: weight 1 up to "Feedback:", 1.5 from it on.
        data, left_out = learner.post_process([trajectory, correct])
        assert left_out == frozenset() and {t.kind for t in data} == {"improvement", "non_improvement", "gold"}
        improvement = next(t for t in data if t.kind == "improvement")
        host = run.ctx.host
        batch = encode_batch(host.tokenizer, [improvement.example], host.max_positions, host.device)
        labels, weights = batch.labels[0].tolist(), batch.weights[0].tolist()
        learned = [i for i, label in enumerate(labels) if label != IGNORE]
        heavy = [i for i in learned if weights[i] == 1.5]
        light = [i for i in learned if weights[i] == 1.0]
        assert heavy and light and len(heavy) + len(light) == len(learned)
        assert max(light) < min(heavy)  # one boundary: everything after it weighs 1.5
        text_from = host.tokenizer.decode([labels[i] for i in heavy if labels[i] != host.tokenizer.eos_token_id])
        assert text_from.replace(" ", "").startswith(FEEDBACK.replace(" ", ""))
        text_before = host.tokenizer.decode([labels[i] for i in light])
        assert FEEDBACK not in text_before and text_before.replace(" ", "").startswith(wrong.replace(" ", "")[:10])

    asyncio.run(_with_student(body))


def test_corrupt_changes_one_number_of_one_step_and_the_verifier_finds_it() -> None:
    task = get_task("arithmetic")
    rng = random.Random(5)
    for example in task.generate("train", 20, seed=3):
        attempt = corrupt(example.rationale, rng)
        changed = [(a, b) for a, b in zip(attempt.split("\n"), example.rationale.split("\n"), strict=True) if a != b]
        assert len(changed) == 1
        assert changed[0][0][:4] == changed[0][1][:4]  # the step label "(2) " is kept
        verdict = task.verify(example, attempt)
        assert not verdict.correct and verdict.step is not None


def test_synthetic_attempts_are_critiqued_corruptions_of_gold_not_samples() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        trajectories, _ = await learner.collect(1)
        window = learner.ctx.task.generate("train", 3, seed=learner.ctx.settings.seed * 1000 + 1)
        assert trajectories, "every corruption of gold is one step from right, so the critic fixes it"
        golds = {e.question: e.rationale for e in window}
        for t in trajectories:
            assert t.improved and t.correct  # a corruption is never right at once
            gold_lines = golds[t.example.question].split("\n")
            assert sum(a != b for a, b in zip(t.attempt.split("\n"), gold_lines, strict=True)) == 1

    asyncio.run(_with_student(body, steps=1, tripost_questions=3, tripost_attempts="synthetic"))


def _weights_by_kind(run: StudentRun, data: list[Tagged]) -> dict[str, set[float]]:
    """The loss weights each kind of example gives its learned tokens."""
    host = run.ctx.host
    found: dict[str, set[float]] = {}
    for tagged in data:
        batch = encode_batch(host.tokenizer, [tagged.example], host.max_positions, host.device)
        learned = batch.labels[0] != IGNORE
        found.setdefault(tagged.kind, set()).update(batch.weights[0][learned].tolist())
    return found


def test_the_feedback_weight_covers_improvement_examples_only_and_gold_ends_in_its_verdict() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        task = learner.ctx.task
        examples = task.generate("train", 4, seed=9)
        wrong = [await learner.edit(e, corrupt(e.rationale, random.Random(i))) for i, e in enumerate(examples[:2])]
        right = [await learner.edit(e, e.rationale) for e in examples[2:]]
        trajectories = [t for t in wrong + right if t is not None]
        assert [t.improved for t in trajectories] == [True, True, False, False]
        data, _ = learner.post_process(trajectories)
        assert {t.kind for t in data} == {"improvement", "non_improvement", "gold"}
        weights = _weights_by_kind(run, data)
        assert weights["improvement"] == {1.0, 1.5}
        assert weights["non_improvement"] == {1.0} and weights["gold"] == {1.0}  # "all correct" is not up-weighted
        for gold in (t for t in data if t.kind == "gold"):
            target = str(gold.example.target)
            assert target.endswith(f"\n{FEEDBACK} {ALL_CORRECT}")  # the reference's gold format, trained on
            assert target.startswith(next(e.rationale for e in examples if e.question in gold.example.prompt))

    asyncio.run(_with_student(body))


def test_per_turn_examples_and_an_attempt_weight_of_zero() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        example = learner.ctx.task.generate("train", 1, seed=4)[0]
        trajectory = await learner.edit(example, corrupt(example.rationale, random.Random(2)))
        assert trajectory is not None and len(trajectory.rounds) == 1
        data, _ = learner.post_process([trajectory])
        turns = [t for t in data if t.kind == "improvement"]
        assert len(turns) == 1  # one wrong round: one improvement turn ...
        text = "".join(piece for piece, _ in turns[0].example.segments())
        assert text.count(f"{FEEDBACK} ") == 1 and text.rstrip().endswith(trajectory.rounds[0][1].rstrip())
        # ... whose attempt is context (weight 0), and the last turn's verdict stays 1.5 as the reference weighs it.
        assert _weights_by_kind(run, turns) == {"improvement": {1.5}}
        last = [t for t in data if t.kind == "non_improvement"]
        assert len(last) == 1 and "".join(p for p, _ in last[0].example.segments()).startswith(trajectory.rounds[0][1])
        assert _weights_by_kind(run, last) == {"non_improvement": {1.0, 1.5}}

    asyncio.run(_with_student(body, tripost_turns=True, tripost_attempt_weight=0.0))


def test_each_iteration_trains_its_epochs_with_a_fresh_optimizer_warm_up_and_cosine() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        seen: list[tuple[float, int, int]] = []  # (lr, AdamW's step count, iteration) after each update

        def record(step: int, total: int, result: StepResult) -> None:
            optimizer, learner = run.ctx.optimizer, run.learner
            assert isinstance(learner, TriPosTLearner)
            counts = {int(state["step"]) for state in optimizer.state.values()}
            assert len(counts) == 1
            seen.append((optimizer.param_groups[0]["lr"], counts.pop(), learner.iteration))

        await run.run(on_step=record)
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        first = learner.collected[0]
        size = first["improvement"] + first["non_improvement"] + first["gold"]
        updates = math.ceil(4 * size / 2)  # 4 epochs of the iteration's data, batches of 2
        assert [i for _, _, i in seen] == [1] * updates + [2] * (len(seen) - updates)
        assert [count for _, count, _ in seen[:updates]] == list(range(1, updates + 1))
        assert seen[updates][1] == 1  # the second iteration starts a new optimizer
        schedule = LRSchedule(0.01, updates, math.ceil(0.2 * updates), 0.1)
        assert [lr for lr, _, _ in seen[:updates]] == pytest.approx([schedule.lr(u) for u in range(1, updates + 1)])
        assert seen[updates - 1][0] == pytest.approx(0.001)  # the floor at the iteration's end ...
        assert seen[updates][0] < 0.01 and seen[updates][0] == pytest.approx(seen[0][0], rel=0.5)  # ... then warm-up

    asyncio.run(
        _with_student(body, steps=14, tripost_questions=3, batch_size=2, lr=0.01, tripost_iterations=2, eval_every=100)
    )


def test_the_run_schedule_shares_the_steps_and_fills_batches_with_gold() -> None:
    async def body(run: StudentRun, teacher: Node) -> None:
        results: list[StepResult] = []
        lrs: list[float] = []

        def record(step: int, total: int, result: StepResult) -> None:
            results.append(result)
            lrs.append(run.ctx.optimizer.param_groups[0]["lr"])

        summary = await run.run(on_step=record)
        learner = run.learner
        assert isinstance(learner, TriPosTLearner)
        assert summary.steps_done == 12 and [len(r.kinds) for r in results] == [4] * 12  # every batch full
        for half, row in zip((results[:6], results[6:]), learner.collected, strict=True):
            size = row["improvement"] + row["non_improvement"] + row["gold"]
            trained = sum(kind != "gold" for r in half for kind in r.kinds)
            # Each iteration's share (6 steps) sees its data twice (tripost_epochs 2), the rest of a batch is gold.
            assert size <= 12 and trained == 2 * (size - row["gold"])
        steps = [step for step, _ in enumerate(results, start=1)]
        schedule = LRSchedule(0.01, 12, 2, 0.1)
        assert lrs == pytest.approx([schedule.lr(step) for step in steps])  # the run's cosine, one optimizer
        assert {int(s["step"]) for s in run.ctx.optimizer.state.values()} == {12}

    asyncio.run(
        _with_student(
            body,
            steps=12,
            tripost_questions=3,
            batch_size=4,
            lr=0.01,
            tripost_iterations=2,
            tripost_epochs=2.0,
            tripost_schedule="run",
            lr_schedule="cosine",
            lr_warmup_steps=2,
            eval_every=100,
        )
    )
