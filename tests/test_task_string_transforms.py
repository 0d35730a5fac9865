"""StringTransformTask: seeded splits, gold rationales that verify, and corruptions caught at the exact step."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks.base import FINAL_LABEL, SPLITS, Example, Split, TaskError, held_out, step_label
from node.tasks.string_transforms import INSTRUCTIONS, KINDS, WORDS, StringTransformTask, shift_letter

TASK = StringTransformTask()


def test_word_list() -> None:
    assert len(WORDS) >= 300
    assert not [word for word, count in Counter(WORDS).items() if count > 1]
    assert all(word.isascii() and word.isalpha() and word.islower() for word in WORDS)
    assert sum(3 <= len(word) <= 6 for word in WORDS) >= 150
    assert sum(7 <= len(word) <= 10 for word in WORDS) >= 80


@pytest.mark.parametrize("split", SPLITS)
def test_gold_rationales_verify_and_grade(split: Split) -> None:
    examples = TASK.generate(split, 300, seed=7)
    assert len(examples) == 300
    assert {ex.meta["kind"] for ex in examples} == set(KINDS)
    for ex in examples:
        assert ex.split == split
        verdict = TASK.verify(ex, ex.rationale)
        assert verdict.correct, (ex.question, verdict)
        assert TASK.grade(ex, ex.rationale)
        assert [step_label(line) for line in ex.rationale.splitlines()] == ["(1)", "(2)", FINAL_LABEL]
        word = str(ex.meta["word"])
        low, high = (7, 10) if split == "unseen" else (3, 6)
        assert low <= len(word) <= high
        if ex.meta["kind"] == "reversal":
            assert ex.answer == word[::-1]
        elif ex.meta["kind"] == "insertion":
            assert ex.answer == word


def test_reversal_and_shift_answers() -> None:
    ex = Example('Q: Shift each letter of "yak" forward by 2.', "", "acm", "train")
    assert shift_letter("y", 2) == "a" and shift_letter("z", 1) == "a"
    steps = "(1) The letters are y, a, k.\n(2) Shifted forward by 2, they are a, c, m."
    assert TASK.verify(ex, f"{steps}\n{FINAL_LABEL} So the answer is acm.").correct


def test_determinism_and_disjointness() -> None:
    assert TASK.generate("train", 50, seed=1) == TASK.generate("train", 50, seed=1)
    assert TASK.generate("train", 50, seed=1) != TASK.generate("train", 50, seed=2)
    assert TASK.generate("train", 50, seed=1) != TASK.generate("seen", 50, seed=1)
    train = {ex.question for ex in TASK.generate("train", 2000, seed=0)}
    seen = {ex.question for ex in TASK.generate("seen", 500, seed=0)}
    assert train.isdisjoint(seen)
    assert all(held_out(q) for q in seen) and not any(held_out(q) for q in train)


def test_kinds_option_and_instructions() -> None:
    task = StringTransformTask(kinds=["shift"], max_shift=25)
    examples = task.generate("train", 100, seed=3)
    assert {ex.meta["kind"] for ex in examples} == {"shift"}
    assert task.instructions == {"shift": INSTRUCTIONS["shift"]}
    assert set(TASK.instructions) == set(KINDS)
    assert all(sentence.endswith(".") and sentence.count(".") == 1 for sentence in INSTRUCTIONS.values())
    assert {ex.question.split()[-1] for ex in task.generate("train", 400)} > {"1.", "25."}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kinds": []}, "kinds must be a non-empty list"),
        ({"kinds": "reversal"}, "kinds must be a non-empty list"),
        ({"kinds": ["reversal", "rot13"]}, 'The kind "rot13" is not one of insertion, reversal, shift.'),
        ({"max_shift": 0}, r"max_shift must be a whole number between 1 and 25 \(got 0\)\."),
        ({"max_shift": 2.5}, r"max_shift must be a whole number"),
        ({"symbols": "a."}, "symbols must be non-empty"),
        ({"symbols": ""}, "symbols must be non-empty"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        StringTransformTask(**options)  # type: ignore[arg-type]


def test_bad_generate_arguments() -> None:
    with pytest.raises(TaskError, match="is not one of"):
        TASK.generate("test", 3)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="must not be negative"):
        TASK.generate("train", -1)
    assert TASK.generate("seen", 0) == []


def one_of_each() -> list[Example]:
    examples = TASK.generate("train", 60, seed=11) + TASK.generate("unseen", 60, seed=11)
    pairs = [(kind, split) for kind in KINDS for split in ("train", "unseen")]
    return [next(ex for ex in examples if (ex.meta["kind"], ex.split) == pair) for pair in pairs]


def items_of(line: str) -> tuple[str, list[str], str]:
    """(head, items, separator) of a gold list line."""
    sep = " " if "characters" in line else ", "
    head, _, tail = line.partition(" are ")
    return head + " are ", tail.removesuffix(".").split(sep), sep


@pytest.mark.parametrize("ex", one_of_each(), ids=lambda ex: ex.question)
def test_each_corrupted_item_is_caught_at_its_step(ex: Example) -> None:
    lines = ex.rationale.splitlines()
    for index in (0, 1):
        head, items, sep = items_of(lines[index])
        for j, item in enumerate(items):
            wrong = "z" if item != "z" else "y"
            bad = [*items[:j], wrong, *items[j + 1 :]]
            attempt = [*lines[:index], head + sep.join(bad) + ".", *lines[index + 1 :]]
            verdict = TASK.verify(ex, "\n".join(attempt))
            assert (verdict.correct, verdict.step, verdict.line, verdict.segment) == (
                False,
                f"({index + 1})",
                index,
                wrong,
            )
            assert verdict.reason.endswith(f'is "{item}", not "{wrong}".') or verdict.reason.startswith("Shifting")
        short = [*lines[:index], head + sep.join(items[:-1]) + ".", *lines[index + 1 :]]
        verdict = TASK.verify(ex, "\n".join(short))
        assert (verdict.step, verdict.line) == (f"({index + 1})", index)
        assert verdict.reason.startswith(f"The list stops after {len(items) - 1} ")
        long = [*lines[:index], head + sep.join([*items, "q"]) + ".", *lines[index + 1 :]]
        verdict = TASK.verify(ex, "\n".join(long))
        assert (verdict.step, verdict.line, verdict.segment) == (f"({index + 1})", index, "q")
    final = TASK.verify(ex, "\n".join([*lines[:2], f"{FINAL_LABEL} So the answer is {ex.answer}x."]))
    assert (final.step, final.line, final.segment) == (FINAL_LABEL, 2, ex.answer + "x")
    assert final.reason == f'Joining the letters gives "{ex.answer}", not "{ex.answer}x".'


def test_reason_sentences() -> None:
    ex = Example('Q: Shift each letter of "yak" forward by 2.', "", "acm", "train")
    verdict = TASK.verify(ex, "(1) The letters are y, a, k.\n(2) Shifted forward by 2, they are b, c, m.")
    assert verdict.reason == 'Shifting "y" forward by 2 gives "a", not "b".'
    assert verdict.feedback == 'In step (2) the part "b" is incorrect. ' + verdict.reason
    ex = Example('Q: Reverse the letters of "house".', "", "esuoh", "train")
    assert TASK.verify(ex, "(1) The letters are h, o, x, s, e.").reason == 'Letter 3 of "house" is "u", not "x".'
    two = "(1) The letters are h, o, u, s, e.\n(2) Reversed, they are e, s, o, u, h."
    assert TASK.verify(ex, two).reason == 'Letter 3 of the reversed word is "u", not "o".'
    ex = Example('Q: Remove the inserted symbols from "h.o!u".', "", "hou", "train")
    assert TASK.verify(ex, "(1) The characters are h . o , u.").reason == 'Character 4 of "h.o!u" is "!", not ",".'
    two = "(1) The characters are h . o ! u.\n(2) Without the symbols, the letters are h, !, u."
    assert TASK.verify(ex, two).reason == 'Without the symbols, letter 2 is "o", not "!".'


def test_structural_mistakes() -> None:
    ex = TASK.generate("train", 1, seed=5)[0]
    lines = ex.rationale.splitlines()
    cases = {
        "": ("(1)", 0, "The rationale stops before step (1)."),
        "hello": ("(1)", 0, "This line should be step (1)"),
        "(2) The letters": ("(1)", 0, "This line should be step (1)"),
        "(1) Letters: a, b": ("(1)", 0, "Step (1) should open with"),
        lines[0]: (FINAL_LABEL, 1, None),
        "\n".join(lines[:2]): (FINAL_LABEL, 2, "The rationale stops before the final response."),
        "\n".join([*lines[:2], "(3) more"]): (FINAL_LABEL, 2, "This line should be the final response"),
        "\n".join([*lines[:2], f"{FINAL_LABEL} I do not know."]): (FINAL_LABEL, 2, "The final response does not say"),
        ex.rationale + "\n(4) extra": ("(4)", 3, "The rationale goes on after the final response."),
    }
    for attempt, (step, line, reason) in cases.items():
        verdict = TASK.verify(ex, attempt)
        assert not verdict.correct
        if reason is None:
            assert verdict.step == "(2)" and verdict.line == 1  # step (2) missing comes first
            continue
        assert (verdict.step, verdict.line) == (step, line), attempt
        assert verdict.reason.startswith(reason), verdict.reason
    assert TASK.verify(ex, ex.rationale + "\n\n").correct
    strange = TASK.verify(Example("Q: what?", "", "", "train"), ex.rationale)
    assert not strange.correct and "not one this task asks" in strange.reason


LOWER = st.from_regex(r"[a-z]{1,12}", fullmatch=True)
QUESTIONS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda w: f'Q: Remove the inserted symbols from "{w}".', st.text(min_size=1, max_size=20)),
    st.builds(lambda w: f'Q: Reverse the letters of "{w}".', LOWER),
    st.builds(lambda w, k: f'Q: Shift each letter of "{w}" forward by {k}.', LOWER, st.integers(0, 10**6)),
)


@settings(max_examples=300, deadline=None)
@given(question=QUESTIONS, text=st.text(max_size=200), gold_prefix=st.integers(0, 3))
def test_verify_never_raises(question: str, text: str, gold_prefix: int) -> None:
    gold = TASK.generate("train", 1, seed=len(question))[0].rationale.splitlines()
    ex = Example(question, "", "", "train")
    for attempt in (text, "\n".join([*gold[:gold_prefix], text])):
        verdict = TASK.verify(ex, attempt)
        assert verdict.correct or verdict.reason
