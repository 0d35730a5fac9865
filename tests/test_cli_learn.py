"""`agora learn` from the command line: a whole run against a teacher node, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from node.app import Node
from node.cli import main
from node.store import read_rows
from tests.nodes import running_node
from tests.students import FAST_STUDENT
from tests.teachers import TINY_MODEL, teacher_settings


def _config(tmp_path: Path, seeds: list[str], **student: object) -> Path:
    document = {
        "node": {"name": "learner", "data_dir": str(tmp_path / "data"), "roles": ["student"], "listen": "127.0.0.1:0"},
        "model": TINY_MODEL,
        "peers": {"seeds": seeds},
        "metrics": {"listen": "127.0.0.1:0"},
        "student": {**FAST_STUDENT, **student},
        "security": {"insecure": True},
    }
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_learn_runs_against_a_teacher_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = Node(teacher_settings(node={"name": "teacher"}))
    with running_node(teacher) as addresses:
        config = _config(tmp_path, [addresses.grpc], steps=2, eval_every=1)
        assert main(["learn", "--config", str(config), "--log-format", "json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tripost on arithmetic: 2 steps in ")
    assert "SPLIT" in out and "seen" in out and "unseen" in out
    lessons_line = next(line for line in out.splitlines() if line.startswith("lessons: "))
    received = int(lessons_line.split()[1])
    stored = read_rows(tmp_path / "data", "SELECT COUNT(*) FROM received_lessons")[0][0]
    assert received == stored > 0 and "from teachers: teacher " in lessons_line
    assert read_rows(tmp_path / "data", "SELECT step FROM updates ORDER BY step") == [(1,), (2,)]
    assert "checkpoint: " in out and (tmp_path / "data" / "student" / "step-000002" / "model").is_dir()
    # Run again: it resumes from the checkpoint at step 2, which already reached its steps.
    assert main(["learn", "--config", str(config), "--steps", "2"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--set", "node.roles=[teacher]"], "node.roles must include student"),
        (["--algorithm", "tnd"], "student.algorithm tnd learns the word_learning corpus"),
        (["--set", "student.task=chess"], "student.task: unknown task 'chess'"),
        (["--steps", "0"], "student.steps"),
    ],
)
def test_learn_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], message: str
) -> None:
    config = _config(tmp_path, [])
    assert main(["learn", "--config", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_learn_without_teachers_gives_up_with_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, [], teacher_wait_s=1.0, steps=1)
    assert main(["learn", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no teacher of 'arithmetic' answered Critique within 1s" in err and "Traceback" not in err
