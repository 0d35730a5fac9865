"""The arithmetic task: gold scripts verify, each kind of mistake is caught at its own step, splits are sound."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks import get_task
from node.tasks.arith_expr import ParseError, parse, reductions, render
from node.tasks.arithmetic import ArithmeticTask
from node.tasks.base import FINAL_LABEL, SPLITS, Example, Split, TaskError, Verdict, step_label

TASK = ArithmeticTask()

# The worked example of the brief (TriPosT's format), depth 3 with leaves of length 3.
TRIPOST = "Q: (((-9 * 3 + -6) * (-2 + 7 * -6)) - ((-4 - -6 + 6) * (4 * -4 + 8))) ="
TRIPOST_GOLD = """\
(1) This equation can be written as "((A * B) - (C * D))", where A = (-9 * 3 + -6), B = (-2 + 7 * -6), \
C = (-4 - -6 + 6) and D = (4 * -4 + 8).
(2) Let's calculate A = (-9 * 3 + -6) = ((-9 * 3) + -6) = (-27 + -6) = -33.
(3) Let's calculate B = (-2 + 7 * -6) = (-2 + (7 * -6)) = (-2 + -42) = -44.
(4) Let's calculate C = (-4 - -6 + 6) = ((-4 - -6) + 6) = (2 + 6) = 8.
(5) Let's calculate D = (4 * -4 + 8) = ((4 * -4) + 8) = (-16 + 8) = -8.
(6) Then, the final equation is ((A * B) - (C * D)) = ((-33 * -44) - (8 * -8)) = (1452 - (8 * -8)) = \
(1452 - -64) = 1516.
(Final response) So the answer is 1516."""

NUMBER = re.compile(r"-?\d+")


def is_sentence(reason: str) -> bool:
    return reason[:1].isupper() and reason.endswith(".") and ". " not in reason


def corrupt(rationale: str, line: int, old: str, new: str) -> str:
    """The rationale with the first `old` on one line replaced by `new`."""
    lines = rationale.splitlines()
    assert old in lines[line], (old, lines[line])
    lines[line] = lines[line].replace(old, new, 1)
    return "\n".join(lines)


def assert_caught(example: Example, attempt: str, line: int) -> Verdict:
    """The verifier names exactly this line and its label, and the improvement verifies."""
    verdict = TASK.verify(example, attempt)
    assert not verdict.correct
    assert verdict.line == line, verdict
    assert verdict.step == step_label(example.rationale.splitlines()[line]), verdict
    assert is_sentence(verdict.reason), verdict.reason
    assert TASK.verify(example, TASK.improve(example, attempt, verdict)).correct
    return verdict


# --- the gold script ---------------------------------------------------------------------------


def test_gold_format_is_tripost() -> None:
    example = TASK.example(TRIPOST, "unseen")
    assert example.rationale == TRIPOST_GOLD
    assert example.answer == "1516"
    assert example.meta == {"length": 3, "depth": 3}
    assert TASK.extract_answer(example.rationale) == "1516"


def test_depth_one_and_two_formats() -> None:
    one = TASK.example("Q: (2 + 3 * 4) =")
    assert one.rationale == "(1) Let's calculate (2 + 3 * 4) = (2 + (3 * 4)) = (2 + 12) = 14.\n" + (
        "(Final response) So the answer is 14."
    )
    assert TASK.example("Q: (-3 - 1) =").rationale.splitlines()[0] == "(1) Let's calculate (-3 - 1) = -4."
    two = TASK.example("Q: ((7 - -1 + -1) - (-7 + 7 * 3)) =")
    assert two.rationale.splitlines()[0] == (
        '(1) This equation can be written as "(A - B)", where A = (7 - -1 + -1) and B = (-7 + 7 * 3).'
    )
    assert two.rationale.splitlines()[3] == "(4) Then, the final equation is (A - B) = (7 - 14) = -7."
    assert two.answer == "-7"


@pytest.mark.parametrize("split", SPLITS)
def test_every_gold_rationale_verifies_and_grades(split: Split) -> None:
    for seed in range(3):
        for example in TASK.generate(split, 100, seed):
            assert TASK.verify(example, example.rationale) == Verdict(True), example.rationale
            assert TASK.grade(example, TASK.prompt(example.question) + example.rationale)
            assert example.answer == str(_value(example.question))


def _value(question: str) -> int:
    """The answer by an independent route: the parser's reductions of the whole question."""
    last = reductions(parse(question.removeprefix("Q: ").removesuffix(" =")))[-1]
    return int(render(last))


# --- each kind of mistake, caught at its own step ----------------------------------------------

CORRUPTIONS = [
    # (line, old, new, words the reason must contain)
    (0, "((A * B) - (C * D))", "((A * B) + (C * D))", "equation should be written as ((A * B) - (C * D))"),
    (0, "B = (-2", "C = (-2", "B should be (-2 + 7 * -6)"),
    (0, "(-2 + 7 * -6)", "(-2 + 7 * -5)", "B should be (-2 + 7 * -6)"),
    (0, " and D = (4 * -4 + 8)", "", "D = (4 * -4 + 8) is missing"),
    (1, "calculate A", "calculate B", "should calculate A = (-9 * 3 + -6)"),
    (2, "(-2 + 7 * -6) =", "(-2 + 7 * 6) =", "B is (-2 + 7 * -6) according to step (1)"),
    (1, "((-9 * 3) + -6)", "(-9 * (3 + -6))", "Multiplication should be done before addition"),
    (3, "((-4 - -6) + 6)", "(-4 - (-6 + 6))", "from left to right"),
    (1, "((-9 * 3) + -6) = (-27", "(-27", "bracketed before calculating"),
    (1, "(-27 + -6)", "(-28 + -6)", "calculation error, since (-9 * 3) should be -27"),
    (2, "= -44.", "= -45.", "calculation error, since (-2 + -42) should be -44"),
    (1, "(-27 + -6) = -33", "-33", "Only one operation should be calculated at a time"),
    (1, "= -33.", "= -33 = -34.", "already reached"),
    (1, " = -33.", ".", "stops before its result"),
    (5, "((-33 * -44) - (8 * -8)) =", "((-33 * -44) - (8 * 8)) =", "D is -8 from step (5), not 8"),
    (5, "(A * B) - (C * D)) =", "(A * B) - (D * C)) =", "final equation should be ((A * B) - (C * D))"),
    (5, "(1452 - (8 * -8))", "(1424 - (8 * -8))", "since (-33 * -44) should be 1452"),
    (5, "(1452 - -64)", "(1452 - 64)", "since (8 * -8) should be -64"),
    (5, "(1452 - (8 * -8))", "((-33 * -44) - -64)", "leftmost innermost operation (-33 * -44)"),
    (5, "= 1516.", "= 1517.", "since (1452 - -64) should be 1516"),
    (6, "1516", "1517", "final answer should be 1516, the result of step (6)"),
    (6, "So the answer is", "Thus we get", 'state "So the answer is" and then 1516, the result of step (6)'),
    (4, "Let's calculate", "Now", 'should read "Let\'s calculate D = (4 * -4 + 8) = ..."'),
    (3, "(4)", "(4.1)", "should be step (4), but it is labelled (4.1)"),
    (3, "(4) ", "", "has no step label"),
]


@pytest.mark.parametrize(("line", "old", "new", "words"), CORRUPTIONS)
def test_a_corrupted_step_is_named(line: int, old: str, new: str, words: str) -> None:
    example = TASK.example(TRIPOST)
    gold_line = example.rationale.splitlines()[line]
    verdict = assert_caught(example, corrupt(example.rationale, line, old, new), line)
    assert words in verdict.reason, verdict.reason
    assert verdict.feedback.startswith(f"In step {step_label(gold_line)}")


def test_the_segment_is_the_failing_link() -> None:
    example = TASK.example(TRIPOST)
    verdict = TASK.verify(example, corrupt(example.rationale, 5, "(1452 - (8 * -8))", "(1424 - (8 * -8))"))
    assert verdict.segment == "((-33 * -44) - (8 * -8)) = (1424 - (8 * -8))"
    assert verdict.reason == "There is a calculation error, since (-33 * -44) should be 1452."


@pytest.mark.parametrize("line", range(7))
def test_a_missing_step_is_named(line: int) -> None:
    example = TASK.example(TRIPOST)
    lines = example.rationale.splitlines()
    verdict = assert_caught(example, "\n".join(lines[:line] + lines[line + 1 :]), line)
    assert "missing" in verdict.reason or "labelled" in verdict.reason


def test_missing_lines_and_extra_text() -> None:
    example = TASK.example(TRIPOST)
    assert TASK.verify(example, "") == Verdict(False, "(1)", 0, None, "Step (1) is missing.")
    truncated = "\n".join(example.rationale.splitlines()[:6])
    assert TASK.verify(example, truncated).reason == "The final response is missing."
    assert TASK.verify(example, example.rationale + "\nQ: (1 + 1) =\nAnswer: (1) blah").correct
    assert TASK.verify(example, example.rationale.replace(" = ", "=").replace("-", " -")).correct  # spacing


def test_depth_one_mistakes() -> None:
    example = TASK.example("Q: (2 + 3 * 4) =")
    verdict = assert_caught(example, corrupt(example.rationale, 0, "(2 + 12)", "(5 * 4)"), 0)
    assert verdict.reason.startswith("The leftmost innermost") or "one operation" in verdict.reason
    verdict = assert_caught(example, corrupt(example.rationale, 0, "(2 + 3 * 4) =", "(2 + 3 * 5) ="), 0)
    assert verdict.reason == "The expression to calculate is (2 + 3 * 4)."
    assert_caught(example, corrupt(example.rationale, 1, "14", "15"), 1)


def test_unknown_question_is_a_verdict() -> None:
    example = Example("What is 2 + 2?", "", "4", "train")
    verdict = TASK.verify(example, "(1) Let's calculate (2 + 2) = 4.")
    assert not verdict.correct and is_sentence(verdict.reason)


# --- properties over generated problems --------------------------------------------------------

examples = st.builds(
    lambda split, seed: TASK.generate(split, 1, seed)[0], st.sampled_from(SPLITS), st.integers(0, 10**6)
)


@settings(max_examples=60, deadline=None)
@given(example=examples)
def test_property_gold_verifies(example: Example) -> None:
    assert TASK.verify(example, example.rationale).correct


@settings(max_examples=150, deadline=None)
@given(example=examples, data=st.data())
def test_property_a_changed_number_is_caught_at_its_step(example: Example, data: st.DataObject) -> None:
    lines = example.rationale.splitlines()
    line = data.draw(st.integers(0, len(lines) - 1))
    label = step_label(lines[line]) or ""
    numbers = list(NUMBER.finditer(lines[line], len(label)))  # a number of the step, not of its label
    spot = data.draw(st.sampled_from([numbers[-1], *numbers]))  # a step's result, or any number in it
    value = int(spot[0]) + data.draw(st.integers(-50, 50).filter(bool))
    changed = lines[line][: spot.start()] + str(value) + lines[line][spot.end() :]
    attempt = "\n".join([*lines[:line], changed, *lines[line + 1 :]])
    assert_caught(example, attempt, line)


@settings(max_examples=200, deadline=None)
@given(example=examples, text=st.text(max_size=300), question=st.text(max_size=60))
def test_property_the_verifier_never_raises(example: Example, text: str, question: str) -> None:
    for attempt in (text, example.rationale[: len(text)] + text, text + example.rationale[len(text) :]):
        verdict = TASK.verify(example, attempt)
        assert isinstance(verdict, Verdict) and is_sentence(verdict.reason)
    assert not TASK.verify(Example(question, "", "0", "train"), text).correct


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet="0123456789()+-* AB?=", max_size=80))
def test_property_the_parser_round_trips_or_raises_parse_error(text: str) -> None:
    try:
        tree = parse(text)
    except ParseError:
        return
    assert parse(render(tree)) == tree


def test_hostile_sizes_do_not_raise() -> None:
    deep = TASK.example(TRIPOST)
    flat = TASK.example("Q: (2 + 3 * 4) =")
    for body in ("(" * 5000 + "1", "9" * 5000, " * ".join(["9" * 39] * 200), "= " * 5000, "-" * 5000):
        for example, attempt in (
            (deep, f"(1) {body}"),
            (deep, deep.rationale.replace("(-27 + -6)", body)),
            (flat, f"(1) Let's calculate {body}."),
            (flat, f"(1) Let's calculate (2 + 3 * 4) = {body}."),
            (flat, f"(1) Let's calculate (2 + 3 * 4) = (2 + (3 * 4)) = {body}."),
        ):
            verdict = TASK.verify(example, attempt)
            assert not verdict.correct and is_sentence(verdict.reason)
    leaf = "(" + " * ".join(["9" * 40] * 60) + ")"
    huge = Example(f"Q: (({leaf} * {leaf}) * ({leaf} * {leaf})) =", "", "0", "train")  # 9600-digit answer
    assert not TASK.verify(huge, "(1)").correct


# --- splits and options ------------------------------------------------------------------------


def test_generate_is_deterministic() -> None:
    for split in SPLITS:
        assert TASK.generate(split, 30, 7) == ArithmeticTask().generate(split, 30, 7)
        assert TASK.generate(split, 30, 7) != TASK.generate(split, 30, 8)
        assert len({example.question for example in TASK.generate(split, 100, 1)}) == 100


def test_train_and_seen_never_overlap() -> None:
    train = {example.question for seed in range(3) for example in TASK.generate("train", 300, seed)}
    seen = {example.question for seed in range(3) for example in TASK.generate("seen", 300, seed)}
    assert not train & seen


def test_splits_have_their_shapes() -> None:
    for split in ("train", "seen"):
        for example in TASK.generate(split, 100):
            assert example.meta["length"] in {2, 3} and example.meta["depth"] in {1, 2}
    shapes = {(example.meta["length"], example.meta["depth"]) for example in TASK.generate("unseen", 100)}
    assert shapes == {(3, 3), (4, 2), (4, 3)}  # (3, 2) is in distribution


def test_options_shape_the_splits() -> None:
    task = ArithmeticTask(lengths=[2], depths=[1], unseen_lengths=[5], unseen_depths=[1])
    assert {example.meta["length"] for example in task.generate("unseen", 20)} == {5}
    assert all(example.question.count("(") == 1 for example in task.generate("train", 20))


@pytest.mark.parametrize(
    "options",
    [
        {"lengths": []},
        {"lengths": [1, 2]},
        {"depths": [0]},
        {"depths": [4]},
        {"unseen_lengths": "34"},
        {"unseen_depths": [True]},
        {"lengths": 3},
        {"unseen_lengths": [2, 3], "unseen_depths": [1, 2]},  # nothing out of distribution
    ],
)
def test_bad_options_raise(options: dict[str, object]) -> None:
    with pytest.raises(TaskError) as info:
        ArithmeticTask(**options)  # type: ignore[arg-type]
    assert is_sentence(str(info.value))


def test_bad_calls_raise() -> None:
    with pytest.raises(TaskError):
        TASK.generate("test", 1)  # type: ignore[arg-type]
    with pytest.raises(TaskError):
        TASK.generate("train", -1)
    with pytest.raises(TaskError, match="distinct"):
        ArithmeticTask(lengths=[2], depths=[1]).generate("seen", 500)  # only ~1083 depth-1 pairs exist
    with pytest.raises(TaskError):
        TASK.example("Q: (1 + A) =")


def test_corpus_covers_the_alphabet() -> None:
    text = "".join(TASK.corpus(n_per_split=20))
    assert set("0123456789()+-*=ABCD\"'.,") <= set(text)
    assert FINAL_LABEL in text


def test_a_task_spec_sets_options_and_bad_options_are_sentences() -> None:
    task = get_task("arithmetic:lengths=2,3:depths=1:unseen_lengths=4:unseen_depths=1")
    assert isinstance(task, ArithmeticTask) and task.name == "arithmetic"
    shapes = {(e.meta["length"], e.meta["depth"]) for e in task.generate("train", 50, seed=1)}
    assert shapes == {(2, 1), (3, 1)}
    assert {(e.meta["length"], e.meta["depth"]) for e in task.generate("unseen", 20, seed=1)} == {(4, 1)}
    bad = {
        "arithmetic:size=2": "no option 'size'; its options are lengths, depths",
        "arithmetic:lengths": "write lengths=N",
        "arithmetic:lengths=two": "write lengths=N",
        "arithmetic:depths=1:depths=2": "given twice",
        "arithmetic:lengths=9": "from 2 to 8",
        "word_sorting:lengths=2": "its options are train_pool",
        "algebra:lengths=2": "unknown task 'algebra'",
        "arithmetic:train_pool=0": "at least 1",
        "arithmetic:train_pool=3,4": "one whole number",
    }
    for spec, sentence in bad.items():
        with pytest.raises(TaskError, match=sentence):
            get_task(spec)


@pytest.mark.parametrize("name", ["arithmetic", "word_sorting", "string_transforms"])
def test_a_training_pool_bounds_the_training_questions_of_any_task(name: str) -> None:
    pooled = get_task(f"{name}:train_pool=40")
    assert pooled.train_pool == 40
    pool = {e.question for e in get_task(name).generate("train", 40, seed=0)}  # the pool: seed 0's first 40
    drawn = {e.question for seed in range(100) for e in pooled.generate("train", 8, seed)}
    assert drawn == pool  # 800 draws, never a question outside the pool
    batch = pooled.generate("train", 8, seed=3)
    assert batch == pooled.generate("train", 8, seed=3)
    assert batch != pooled.generate("train", 8, seed=4)
    assert pooled.generate("seen", 5, seed=1) == get_task(name).generate("seen", 5, seed=1)  # test splits untouched
    with pytest.raises(TaskError, match="the training pool holds 40"):
        pooled.generate("train", 41)
    unbounded = {e.question for seed in range(30) for e in get_task(name).generate("train", 8, seed)}
    assert len(unbounded) > 40


def test_a_small_training_pool_still_gives_a_tokenizer_corpus_and_clips_what_it_cannot_hold() -> None:
    pooled = get_task("arithmetic:train_pool=8")
    assert pooled.at_most("train", 200) == 8
    assert pooled.at_most("seen", 200) == 200  # held-out splits have no pool
    assert get_task("arithmetic").at_most("train", 200) == 200
    texts = pooled.corpus(seed=0, n_per_split=40)  # a teacher node builds its public texts so
    pool = {pooled.prompt(e.question) + e.rationale for e in pooled.generate("train", 8, seed=0)}
    assert pool <= set(texts)
    assert len(texts) == 8 + 40 + 40  # train (clipped to the pool), seen, unseen
