"""The student's run schedule, gold rationales with their verdict, and a run that continues another's
optimizer: real student nodes with real tiny models."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from node.app import Node
from node.config import ConfigError, Settings, load_settings
from node.llm import ModelHost
from node.llm.schedule import LRSchedule
from node.llm.sft import sft_example
from node.llm.training import IGNORE, encode_batch
from node.tasks import get_task
from node.tasks.base import ALL_CORRECT, FEEDBACK
from student.build import build_student
from student.checkpoints import save_model_optimizer
from student.learner import StepResult
from student.loop import StudentRun, evaluation_steps
from tests.nodes import loopback_settings, started
from tests.students import FAST_STUDENT, student_run, student_settings


async def _sft_run(body: Any, **student: Any) -> None:
    node = Node(student_settings([], algorithm="sft", **{"eval_every": 100, **student}))
    async with started(node):
        await body(await student_run(node, teachers=0))


def test_the_loop_follows_the_run_schedule_from_its_start() -> None:
    async def body(run: StudentRun) -> None:
        lrs: list[float] = []
        await run.run(on_step=lambda step, total, result: lrs.append(run.ctx.optimizer.param_groups[0]["lr"]))
        schedule = LRSchedule(0.02, 30, 5, 0.1)  # the schedule began 20 updates before this run
        assert lrs == pytest.approx([schedule.lr(20 + update) for update in range(1, 11)])
        assert lrs[-1] == pytest.approx(0.002) and lrs[0] > lrs[-1]

    asyncio.run(
        _sft_run(
            body,
            steps=10,
            lr=0.02,
            lr_schedule="cosine",
            lr_warmup_steps=5,
            lr_schedule_start=20,
            lr_schedule_steps=30,
        )
    )


def test_the_default_schedule_is_the_constant_lr() -> None:
    async def body(run: StudentRun) -> None:
        lrs: list[float] = []
        await run.run(on_step=lambda step, total, result: lrs.append(run.ctx.optimizer.param_groups[0]["lr"]))
        assert lrs == pytest.approx([0.004] * 4)

    asyncio.run(_sft_run(body, lr=0.004))


@pytest.mark.parametrize("feedback", [True, False])
def test_gold_rationales_end_in_the_all_correct_feedback_and_it_is_learned(feedback: bool) -> None:
    async def body(run: StudentRun) -> None:
        batches: list[StepResult] = []
        await run.run(on_step=lambda step, total, result: batches.append(result))
        assert batches and all(kind == "gold" for r in batches for kind in r.kinds)
        example = run.learner.gold_batch(1, seed=3)[0].example
        target = str(example.target)
        assert target.endswith(f"\n{FEEDBACK} {ALL_CORRECT}") is feedback
        host = run.ctx.host
        batch = encode_batch(host.tokenizer, [example], host.max_positions, host.device)
        learned = [int(t) for t, label in zip(batch.input_ids[0], batch.labels[0], strict=True) if label != IGNORE]
        text = str(host.tokenizer.decode(learned, skip_special_tokens=True)).replace(" ", "")
        assert text.endswith(ALL_CORRECT.replace(" ", "")) is feedback  # trained on every token of it

    asyncio.run(_sft_run(body, gold_feedback=feedback))


def _from_model(source: Path) -> Settings:
    """A student that starts from the model (and optimizer) saved in `source`."""
    model = {"source": str(source), "device": "cpu", "dtype": "float32"}
    return loopback_settings(
        node={"roles": ["student"], "name": "student"},
        model=model,
        student={**FAST_STUDENT, "algorithm": "sft", "optimizer_state": "from_model"},
    )


def test_a_run_can_continue_the_optimizer_saved_beside_its_model(tmp_path: Path) -> None:
    task = get_task("arithmetic")
    host = ModelHost.build(task)
    optimizer = host.make_optimizer(0.01)
    for seed in range(3):
        host.train_step([sft_example(task, e) for e in task.generate("train", 4, seed)], optimizer)
    host.save(tmp_path / "stage-a")
    save_model_optimizer(tmp_path / "stage-a", optimizer)
    saved = [optimizer.state[p]["exp_avg"].clone() for p in host.model.parameters()]
    host.close()

    async def go() -> None:
        node = Node(_from_model(tmp_path / "stage-a"))
        async with started(node):
            run = await student_run(node, teachers=0)
            state = [run.ctx.optimizer.state[p] for p in run.ctx.host.model.parameters()]
            assert len(state) == len(saved) == len(run.ctx.optimizer.state)
            assert {float(s["step"]) for s in state} == {3.0}  # AdamW goes on from its third step
            assert all(bool((s["exp_avg"] == before).all()) for s, before in zip(state, saved, strict=True))

    asyncio.run(go())


def test_a_missing_optimizer_state_is_a_config_error(tmp_path: Path) -> None:
    host = ModelHost.build(get_task("arithmetic"))
    host.save(tmp_path / "bare")
    host.close()

    async def go() -> None:
        node = Node(_from_model(tmp_path / "bare"))
        async with started(node):
            with pytest.raises(ConfigError, match=r"optimizer\.safetensors does not exist"):
                build_student(node.settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)

    asyncio.run(go())


def test_a_schedule_that_ends_before_the_run_starts_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("student:\n  lr_schedule_start: 50\n  lr_schedule_steps: 40\n")
    with pytest.raises(ConfigError, match=r"must exceed student\.lr_schedule_start"):
        load_settings(config)


def test_log_spaced_evaluations_are_as_many_as_linear_ones_and_crowd_the_early_steps() -> None:
    assert evaluation_steps(100, 20) == {20, 40, 60, 80, 100}
    log_steps = sorted(evaluation_steps(1000, 50, "log"))
    assert log_steps[0] == 1 and log_steps[-1] == 1000 and len(log_steps) <= 20
    assert len([s for s in log_steps if s <= 100]) > len([s for s in log_steps if s > 100])  # half the log range

    async def body(run: StudentRun) -> None:
        await run.run()
        assert [int(h["step"]) for h in run.history] == [0, *sorted(evaluation_steps(27, 9, "log"))]

    asyncio.run(_sft_run(body, steps=27, eval_every=9, eval_spacing="log"))
