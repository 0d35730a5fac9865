"""JsonlTask: a user's JSONL file, its line-numbered errors, splits, sampling and exact-match grading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks.base import FINAL_LABEL, Example, TaskError, held_out
from node.tasks.jsonl_task import JsonlTask


def write(tmp_path: Path, *lines: str, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def record(**fields: object) -> str:
    return json.dumps(fields)


def many(count: int, **extra: object) -> list[str]:
    return [record(input=f"question {i}", output=f"answer {i}", **extra) for i in range(count)]


GOOD = record(input="a", output="b")


@pytest.mark.parametrize(
    ("lines", "lineno", "sentence"),
    [
        ([GOOD, "{not json"], 2, "the line is not valid JSON"),
        ([GOOD, "", GOOD, "[1, 2]"], 4, "the line is a JSON list, not an object."),
        (['"text"'], 1, "the line is a JSON str, not an object."),
        ([record(output="b")], 1, 'the object has no "input" field.'),
        ([GOOD, record(input="a")], 2, 'the object has no "output" field.'),
        ([record(input=3, output="b")], 1, 'the "input" field is not a string.'),
        ([record(input="a", output=None)], 1, 'the "output" field is not a string.'),
        ([GOOD, GOOD, record(input="", output="b")], 3, 'the "input" field is empty.'),
        ([record(input="a", output="   ")], 1, 'the "output" field is empty.'),
        ([record(input="a", output="b", split="test")], 1, 'the split "test" is not one of "train", "seen", "unseen".'),
        ([record(input="a", output="b", split=1)], 1, 'the split 1 is not one of "train", "seen", "unseen".'),
        ([record(input="a", output="x\ny")], 1, 'the "output" field spans several lines; it must be one line.'),
        ([GOOD, record(input="a", output="x\u2028y")], 2, 'the "output" field spans several lines'),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path: Path, lines: list[str], lineno: int, sentence: str) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(TaskError) as caught:
        JsonlTask(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {lineno}: ")
    assert sentence in message


def test_non_utf8_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"input": "\xff", "output": "b"}\n')
    with pytest.raises(TaskError, match=r", line 2: the line is not UTF-8 text\."):
        JsonlTask(path)


def test_missing_and_empty_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"nope\.jsonl: no such file\."):
        JsonlTask(tmp_path / "nope.jsonl")
    with pytest.raises(TaskError, match=r"the file has no examples"):
        JsonlTask(write(tmp_path, "", "   ", name="blank.jsonl"))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(TaskError, match=r"empty\.jsonl: the file has no examples"):
        JsonlTask(tmp_path / "empty.jsonl")
    with pytest.raises(TaskError, match=r"cannot be read"):
        JsonlTask(tmp_path)  # a directory


def test_unknown_keys_are_ignored_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "", record(input="a", output="b", note="hi", split="seen"), "  ", GOOD)
    task = JsonlTask(path)
    (example,) = task.generate("seen", 5)
    assert example.question == "Q: a"
    assert example.rationale == f"{FINAL_LABEL} So the answer is b."
    assert example.answer == "b"
    assert example.meta == {"line": 2}


def test_splits_follow_the_field_or_the_held_out_partition(tmp_path: Path) -> None:
    lines = many(300) + [record(input=f"u{i}", output="x", split="unseen") for i in range(7)]
    task = JsonlTask(write(tmp_path, *lines))
    train, seen, unseen = (task.generate(split, 10_000) for split in ("train", "seen", "unseen"))
    assert len(train) + len(seen) == 300 and len(unseen) == 7
    assert all(not held_out(ex.question[3:]) for ex in train)
    assert all(held_out(ex.question[3:]) for ex in seen)
    assert seen and {ex.split for ex in seen} == {"seen"}
    assert {ex.question for ex in train}.isdisjoint(ex.question for ex in seen)
    assert task.count("unseen") == 7


def test_generate_is_seeded_and_never_fails_for_large_n(tmp_path: Path) -> None:
    task = JsonlTask(write(tmp_path, *many(50, split="train")))
    assert task.generate("train", 20, seed=3) == task.generate("train", 20, seed=3)
    assert task.generate("train", 20, seed=3) != task.generate("train", 20, seed=4)
    everything = task.generate("train", 1000, seed=1)
    assert len(everything) == 50 and len({ex.question for ex in everything}) == 50
    assert everything != sorted(everything, key=lambda ex: int(ex.question.split()[-1]))  # shuffled
    assert task.generate("seen", 5) == []
    assert task.generate("train", 0) == []
    with pytest.raises(TaskError, match="must not be negative"):
        task.generate("train", -1)


@pytest.mark.parametrize("output", ["Paris", "3.5", "Dr.", "e.g. this", "wait...", "two words here", "a. b. c."])
def test_exact_match_with_periods_and_spaces(tmp_path: Path, output: str) -> None:
    task = JsonlTask(write(tmp_path, record(input="q", output=output, split="train")))
    (example,) = task.generate("train", 1)
    assert example.answer == output
    assert task.verify(example, example.rationale).correct
    assert task.grade(example, example.rationale)
    assert task.grade(example, f"thinking...\nSo the answer is {output}.")
    assert not task.grade(example, f"So the answer is {output}x.")
    assert not task.grade(example, "So the answer is something else.")


def test_output_is_stripped(tmp_path: Path) -> None:
    task = JsonlTask(write(tmp_path, record(input="q", output="  42 ", split="train")))
    (example,) = task.generate("train", 1)
    assert example.answer == "42" and task.grade(example, "the answer is 42.")


def example_of(tmp_path: Path, output: str = "42") -> tuple[JsonlTask, Example]:
    task = JsonlTask(write(tmp_path, record(input="q", output=output, split="train")))
    return task, task.generate("train", 1)[0]


def test_verify_checks_the_final_response(tmp_path: Path) -> None:
    task, example = example_of(tmp_path)
    ok = task.verify(example, "(1) some thinking\n(Final response) So the answer is 42.")
    assert ok.correct
    wrong = task.verify(example, "(1) thinking\n(Final response) So the answer is 41.")
    assert (wrong.correct, wrong.step, wrong.line, wrong.segment) == (False, FINAL_LABEL, 1, "41")
    assert wrong.reason == 'The answer is "42", not "41".'
    missing = task.verify(example, "(1) thinking")
    assert (missing.step, missing.line) == (FINAL_LABEL, 1)
    assert missing.reason == 'The rationale has no line opening with "(Final response)".'
    unsaid = task.verify(example, "(Final response) 42")
    assert (unsaid.line, unsaid.reason) == (0, 'The final response does not say "So the answer is ...".')
    # The last final response counts, as grading reads the last answer.
    assert task.verify(example, "(Final response) So the answer is 1.\n(Final response) So the answer is 42.").correct


def test_improve_gives_the_gold_rationale(tmp_path: Path) -> None:
    task, example = example_of(tmp_path)
    attempt = "(1) x\n(Final response) So the answer is 7."
    assert task.improve(example, attempt, task.verify(example, attempt)) == example.rationale
    assert task.improve(example, example.rationale, task.verify(example, example.rationale)) == example.rationale


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_verify_never_raises(text: str) -> None:
    example = Example(question="Q: q", rationale=f"{FINAL_LABEL} So the answer is 42.", answer="42", split="train")
    task = JsonlTask.__new__(JsonlTask)  # verify needs no file
    verdict = task.verify(example, text)
    assert verdict.correct or verdict.reason
