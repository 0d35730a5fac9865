"""A learning benchmark's tuning options: they change the plan only on validation problems, and
the results record the exact command that reproduces a tuned run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.arith_arms import command, tuned, tuned_student
from bench.arith_common import TASK
from bench.common import UNTUNED, Half, Tuning, run_tuned_benchmark
from bench.sft_base import improvement_examples
from bench.tripost_mini import FULL
from node.sim.config import SimNode
from node.tasks import get_task
from node.tasks.base import ALL_CORRECT


def _never_run(quick: bool, out: Path, half: Half, tuning: Tuning) -> dict[str, Any]:
    raise AssertionError("the benchmark ran although its command line was wrong")


def _table(result: dict[str, Any]) -> str:
    return ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--student", "tripost_attempt_weight=0"], "only a --validation run"),
        (["--seeds", "1"], "only a --validation run"),
        (["--validation", "--seeds", "0"], "at least 1"),
        (["--validation", "--student", "no_such_setting=1"], "is not a student setting"),
        (["--validation", "--student", "tripost_attempt_weight"], "expected KEY=VALUE"),
        (["--stage-a-improvement", "0.1"], "only a --validation run"),
        (["--validation", "--stage-a-improvement", "1.5"], "a share between 0 and 1"),
    ],
)
def test_tuning_outside_validation_or_malformed_exits_2_with_a_sentence(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_tuned_benchmark("tripost_mini", "E1", "quick", _never_run, _table, argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_tuning_reaches_the_plan_every_student_and_the_recorded_command() -> None:
    tuning = Tuning(seeds=1, student={"tripost_attempt_weight": 0, "tripost_temperature": 0.7})
    assert tuned(FULL, tuning).seeds == 1
    assert tuned(FULL, UNTUNED) is FULL
    node = SimNode(name="tripost-1", role="student", settings={"student": {"seed": 1, "tripost_attempt_weight": 1.0}})
    changed = tuned_student(node, tuning)
    assert changed.settings["student"] == {"seed": 1, "tripost_attempt_weight": 0, "tripost_temperature": 0.7}
    assert node.settings["student"]["tripost_attempt_weight"] == 1.0  # the arm's own node is left as it was
    assert command("tripost_mini", False, "validation", tuning) == (
        "python -m bench.tripost_mini --validation --seeds 1 "
        "--student tripost_attempt_weight=0 --student tripost_temperature=0.7"
    )
    assert command("tripost_mini", True, "test", UNTUNED) == "python -m bench.tripost_mini --quick"


def test_a_stage_a_tuning_changes_only_stage_a_and_its_cache_name() -> None:
    tuning = Tuning(stage_a_improvement=0.1)
    plan = tuned(FULL, tuning)
    assert plan.stages.improvement_share == 0.1 and plan.seeds == FULL.seeds
    assert plan.stages.stage_a == FULL.stages.stage_a and plan.stages.stage_b == FULL.stages.stage_b
    assert plan.stages.base().identity() != FULL.stages.base().identity()
    # the default stage A is named as it was before the field existed, so its cache stays valid
    assert "improvement_share" not in FULL.stages.base().identity()
    assert command("tripost_mini", False, "validation", tuning).endswith("--validation --stage-a-improvement 0.1")


def test_improvement_examples_train_the_feedback_and_the_correction_not_the_wrong_attempt() -> None:
    task = get_task(TASK)
    made = improvement_examples(task, 12, seed=3)
    assert len(made) == 12
    for example in made:
        assert not isinstance(example.target, str)
        (attempt, attempt_weight), (rest, rest_weight) = example.target
        assert (attempt_weight, rest_weight) == (0.0, 1.0)
        solved = task.solve(example.prompt.split("\n")[0])  # the prompt's question line
        assert solved is not None
        assert not task.verify(solved, attempt).correct  # the context is a wrong attempt
        feedback, _, updated = rest.partition("\nUpdated Answer: ")
        assert feedback.startswith("Feedback: ") and ALL_CORRECT not in feedback
        assert task.verify(solved, updated.split("\nFeedback: ")[0]).correct  # the correction is right
        assert rest.endswith(ALL_CORRECT)
