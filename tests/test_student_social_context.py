"""In-context Social Learning students against real teacher nodes: the lessons are in the prompt
the student evaluates with, the prefix fits its token budget in whole examples, the selection
setting decides which examples those are, and a student resumed from its checkpoint puts the
same prefix before its questions without asking a teacher again.

The student's real model host is subclassed to record every prompt it generates from (fault
injection: it behaves as the real one and reports what it was asked). The teachers run the
page-trained tiny model (conftest's `page_model`), which writes usable examples.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from transformers import PreTrainedTokenizerBase

import student.build
from node.app import Node
from node.llm.host import ModelHost
from node.llm.sampling import Generation, SamplingParams
from node.llm.tokenizer import encode
from node.store import read_rows
from node.tasks import get_task
from node.tasks.base import Example
from student import checkpoints
from student.build import CHECKPOINT_DIR
from student.learner import EVAL_SPLITS
from student.loop import RunSummary, StudentRun
from student.social import SocialLearner
from student.social_context import InContext, Shot, render
from tests.nodes import loopback_settings, started
from tests.students import FAST_STUDENT, student_run, student_settings
from tests.teachers import TINY_MODEL, teacher_settings

TASK = get_task("arithmetic")
SEED = 4  # the student's seed: its random aggregator and its `random` context selection
KEPT = 4  # examples the aggregator keeps, of up to 2 teachers x 2
SOCIAL: dict[str, Any] = {
    "algorithm": "social",
    "seed": SEED,
    "social_aggregator": "random",
    "social_examples": KEPT,
    "social_examples_per_teacher": 2,
    "social_use": "in_context",
}


class PromptRecorder(ModelHost):
    """The student's real host, recording the prompts of every generation."""

    prompts: ClassVar[list[str]] = []

    def generate_sync(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Generation]:
        for prompt, row in zip(prompts, params, strict=True):
            # the prompt and its answer always fit the model's context
            assert len(encode(self.tokenizer, prompt)) + row.max_new_tokens <= self.max_positions, prompt
        self.prompts.extend(prompts)
        return super().generate_sync(prompts, params)


@pytest.fixture(autouse=True)
def _recording_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(student.build, "ModelHost", PromptRecorder)
    PromptRecorder.prompts.clear()


def _teacher(name: str, model: Path) -> Node:
    """A teacher of the page model. Its guard blocks only long verbatim runs of a private record:
    every arithmetic rationale shares 8-word runs ("Let's calculate ...") with some private one,
    and a lesson blocked now and then would leave the student too few examples to choose from."""
    teacher = {"max_new_tokens": 64, "examples_per_shard": 2}
    privacy = {"ngram_block": 48}
    return Node(teacher_settings(node={"name": name}, model={"source": str(model)}, teacher=teacher, privacy=privacy))


def questions(eval_n: int = FAST_STUDENT["eval_n"]) -> list[str]:
    """The prompts of the questions an evaluation asks, in its order."""
    return [TASK.prompt(e.question) for split in EVAL_SPLITS for e in TASK.generate(split, eval_n, SEED)]


def tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(encode(tokenizer, text, add_bos=False))


def social(run: StudentRun) -> SocialLearner:
    assert isinstance(run.learner, SocialLearner)
    return run.learner


def received(data_dir: Path) -> int:
    """Lessons the student's store holds (read once its node has stopped)."""
    return int(read_rows(data_dir, "SELECT COUNT(*) FROM received_lessons")[0][0])


async def _gather(model: Path, **student: object) -> tuple[StudentRun, RunSummary, Path]:
    """A student that gathers from two real teachers and runs its steps; its run, summary and data dir."""
    async with started(_teacher("teacher-a", model), _teacher("teacher-b", model)) as addresses:
        node = Node(student_settings(addresses, **{**SOCIAL, "steps": 1, **student}))
        async with started(node):
            run = await student_run(node, teachers=2)
            summary = await run.run()
            return run, summary, node.settings.node.data_dir


async def _resume(data_dir: Path, **student: object) -> tuple[StudentRun, RunSummary, list[str]]:
    """The student of data_dir started again with no teacher anywhere: its run, summary, and the
    prompts of one evaluation after the run."""
    node = Node(
        loopback_settings(
            node={"roles": ["student"], "name": "student", "data_dir": str(data_dir)},
            model=dict(TINY_MODEL),
            peers={"seeds": []},
            student={**FAST_STUDENT, **SOCIAL, "steps": 3, **student},
        )
    )
    async with started(node):
        run = await student_run(node, teachers=0)
        summary = await run.run()
        PromptRecorder.prompts.clear()
        await run.evaluate()
        return run, summary, list(PromptRecorder.prompts)


@dataclass(frozen=True)
class Gathered:
    """An in-context student that gathered its lessons, evaluated with them and stopped."""

    data_dir: Path
    instruction: str
    examples: list[Shot]  # what the aggregator kept
    context: InContext
    before: list[str]  # the prompts of the evaluation before any lesson
    after: list[str]  # the prompts of the evaluation with the lessons
    received: int
    tokenizer: PreTrainedTokenizerBase
    max_positions: int

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.data_dir, to)
        return to


@pytest.fixture(scope="module")
def gathered(page_model: Path) -> Iterator[Gathered]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(student.build, "ModelHost", PromptRecorder)
        PromptRecorder.prompts.clear()
        run, _, data_dir = asyncio.run(_gather(page_model))
        learner = social(run)
        assert learner.context is not None and len(learner.examples) >= 2
        n = len(questions())
        prompts = list(PromptRecorder.prompts)
        assert len(prompts) == 2 * n  # two evaluations: before the lessons and after
        yield Gathered(
            data_dir,
            learner.instruction,
            list(learner.examples),
            learner.context,
            prompts[:n],
            prompts[n:],
            received(data_dir),
            run.ctx.host.tokenizer,
            run.ctx.host.max_positions,
        )


@pytest.mark.parametrize("use", ["in_context", "both", "fine_tune"])
def test_the_evaluation_prompt_holds_the_lessons_in_both_in_context_modes(page_model: Path, use: str) -> None:
    run, summary, data_dir = asyncio.run(_gather(page_model, social_use=use))
    learner = social(run)
    kept = len(learner.examples)
    assert learner.instruction and kept >= 2  # a teacher may have had too few usable proposals
    n = len(questions())
    assert PromptRecorder.prompts[:n] == questions()  # before any lesson: the bare questions
    after = PromptRecorder.prompts[n:]
    state = checkpoints.latest(data_dir / CHECKPOINT_DIR)
    assert state is not None
    saved = state.state()["learner"]
    assert saved["use"] == use
    if use == "fine_tune":
        assert after == questions() and learner.context is None and saved["context"] is None
        assert any("Social Learning (fine_tune" in note for note in summary.notes)
        return
    # The default budget holds every kept example, whole, after the instruction.
    prefix = render(learner.instruction, learner.examples, TASK.prompt)
    assert prefix.startswith(f"{learner.instruction}\n\n")
    assert all(f"{TASK.prompt(i)}{o}\n\n" in prefix for i, o in learner.examples)
    assert after == [prefix + question for question in questions()]
    # The checkpoint holds the prefix, and the run's summary says which mode ran with what.
    assert learner.context is not None and InContext.from_json(saved["context"]) == learner.context
    assert learner.context.tokens == tokens(run.ctx.host.tokenizer, prefix)
    assert any(
        f"Social Learning ({use}" in note and f"{kept} of {kept} kept examples" in note for note in summary.notes
    )
    assert json.loads((state.path / checkpoints.STATE_FILE).read_text())["learner"]["context"]["examples"]


def test_a_tiny_budget_keeps_fewer_whole_examples_within_it(gathered: Gathered, tmp_path: Path) -> None:
    g = gathered
    assert g.context.budget < g.max_positions  # 0: the model's context less a question and its answer
    assert g.before == questions() and all(p.startswith(g.context.prefix(TASK.prompt)) for p in g.after)
    budget = tokens(g.tokenizer, render(g.instruction, g.examples[:2], TASK.prompt)) - 1
    run, summary, prompts = asyncio.run(_resume(g.copy(tmp_path / "student"), social_context_tokens=budget))
    context = social(run).context
    assert context is not None and context.budget == budget
    prefix = context.prefix(TASK.prompt)
    assert tokens(g.tokenizer, prefix) == context.tokens <= budget
    assert context.instruction == g.instruction and 1 <= len(context.examples) < len(g.examples)
    assert set(context.examples) <= set(g.examples)  # whole examples, never cut
    for left_out in set(g.examples) - set(context.examples):
        assert tokens(g.tokenizer, render(context.instruction, [*context.examples, left_out], TASK.prompt)) > budget
    assert prompts == [prefix + question for question in questions()]
    assert any("prefix rebuilt for new settings" in note for note in summary.notes)


def test_the_prefix_and_the_question_never_overflow_the_context(gathered: Gathered, tmp_path: Path) -> None:
    g = gathered
    run, _, _ = asyncio.run(_resume(g.copy(tmp_path / "student"), social_context_tokens=10**6))
    learner = social(run)
    assert learner.context is not None and learner.context.budget == g.context.budget  # capped at the room
    # A question longer than any the budget left room for: the last examples give way, whole.
    answer = "The answer is 7."
    probe = Example("", answer, "7", "seen")
    room = g.max_positions - 1 - learner.answer_budget(probe)  # less the BOS token and the answer
    head = render(g.instruction, g.examples[:1], TASK.prompt)
    filler = room - tokens(g.tokenizer, head) - tokens(g.tokenizer, TASK.prompt(""))
    long = Example("1" * filler, answer, "7", "seen")
    PromptRecorder.prompts.clear()
    learner.accuracy([long])
    assert PromptRecorder.prompts == [head + TASK.prompt(long.question)]


def test_the_selection_setting_decides_which_examples_are_in_the_prompt(gathered: Gathered, tmp_path: Path) -> None:
    g = gathered

    def count(shots: Sequence[Shot]) -> int:
        return tokens(g.tokenizer, render(g.instruction, shots, TASK.prompt))

    def first_fit(order: Sequence[int], budget: int) -> tuple[Shot, ...]:
        chosen: list[Shot] = []
        for index in order:
            if count([*chosen, g.examples[index]]) <= budget:
                chosen.append(g.examples[index])
        return tuple(chosen)

    lengths = [count([shot]) for shot in g.examples]
    n = len(g.examples)
    shortest = sorted(range(n), key=lambda i: (lengths[i], i))
    shuffled = list(range(n))
    random.Random(SEED).shuffle(shuffled)
    assert shuffled[0] != 0  # the test's seed: the random order does not start as the aggregator's
    # A budget of one example that the other order does not try first: the two keep different ones.
    other, order, budget = (
        ("shortest", shortest, count([g.examples[0]]))
        if shortest[0] != 0
        else ("random", shuffled, count([g.examples[shuffled[0]]]))
    )
    kept: dict[str, tuple[Shot, ...]] = {}
    for select, tried in (("aggregated", list(range(n))), (other, order)):
        student = {"social_context_tokens": budget, "social_context_select": select}
        run, _, prompts = asyncio.run(_resume(g.copy(tmp_path / select), **student))
        context = social(run).context
        assert context is not None and context.select == select and social(run).examples == g.examples
        assert context.examples == first_fit(tried, budget)
        assert prompts == [context.prefix(TASK.prompt) + question for question in questions()]
        kept[select] = context.examples
    assert kept["aggregated"] != kept[other]


def test_an_in_context_student_resumes_with_the_same_prompt_without_asking_teachers(
    gathered: Gathered, tmp_path: Path
) -> None:
    g = gathered
    run, summary, prompts = asyncio.run(_resume(g.copy(tmp_path / "student")))
    assert summary.resumed_from == 1 and summary.finished_early
    learner = social(run)
    assert learner.context == g.context and learner.examples == g.examples and learner.instruction == g.instruction
    assert prompts == g.after  # the same prefix before the same questions
    # No teacher was asked (none is running), and no lesson came in.
    assert run.ctx.teachers.stats.asked == 0 and run.ctx.teachers.stats.by_teacher == {}
    assert received(run.settings.node.data_dir) == g.received > 0
    # The checkpoint's prefix is used as saved, not built again.
    assert [note for note in summary.notes if note.startswith("Social Learning")] == [
        f"Social Learning (in_context, lessons restored from the checkpoint): {g.context.describe()}"
    ]
