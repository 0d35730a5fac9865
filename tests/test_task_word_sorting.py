"""Word sorting (TriPosT's scripted format): generator, gold rationales, step verifier, grader, improve."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks.base import FINAL_LABEL, SPLITS, Example, TaskError, held_out, step_label
from node.tasks.word_sorting import QUESTION_HEAD, WordSortingTask, letter_number, ordinal
from node.tasks.wordlist import WORDS

TASK = WordSortingTask()
BRIEF = ["conference", "apparition", "ignore", "coupe", "copra", "implement"]
BRIEF_RATIONALE = """\
(1) The first letter: "conference"="c" (3), "apparition"="a" (1), "ignore"="i" (9), "coupe"="c" (3), "copra"="c" (3), "implement"="i" (9).
(2) We now have: (1) "apparition" < (3) ["conference" ? "coupe" ? "copra"] < (9) ["ignore" ? "implement"].
(3) Now sort this subpart ["conference" ? "coupe" ? "copra"] by looking at their second letters: "conference"="o" (15), "coupe"="o" (15), "copra"="o" (15).
(3.1) We now have: (15) ["conference" ? "coupe" ? "copra"].
(3.2) Now sort this subpart ["conference" ? "coupe" ? "copra"] by looking at their third letters: "conference"="n" (14), "coupe"="u" (21), "copra"="p" (16).
(3.3) We now have: (14) "conference" < (16) "copra" < (21) "coupe".
(3.4) Hence, we have "conference" < "copra" < "coupe".
(4) Now sort this subpart ["ignore" ? "implement"] by looking at their second letters: "ignore"="g" (7), "implement"="m" (13).
(4.1) We now have: (7) "ignore" < (13) "implement".
(4.2) Hence, we have "ignore" < "implement".
(5) Hence, we have "apparition" < "conference" < "copra" < "coupe" < "ignore" < "implement".
(Final response) So the answer is: apparition conference copra coupe ignore implement."""  # noqa: E501

words_lists = st.lists(st.sampled_from(WORDS), min_size=2, max_size=8, unique=True) | st.lists(
    st.text(alphabet="abc", min_size=1, max_size=5), min_size=2, max_size=6, unique=True
)  # a three-letter alphabet makes deep ties and words that are prefixes of others
problems = st.one_of(
    words_lists.map(TASK.example),
    st.tuples(st.sampled_from(SPLITS), st.integers(0, 2**32)).map(lambda s: TASK.generate(s[0], 1, s[1])[0]),
)  # hand-made lists and generated problems of every split


def edit(rationale: str, line: int, change: Callable[[str], str]) -> str:
    lines = rationale.splitlines()
    lines[line] = change(lines[line])
    return "\n".join(lines)


def sub(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, (old, text)
        return text.replace(old, new, 1)

    return change


def drop(rationale: str, line: int) -> str:
    lines = rationale.splitlines()
    del lines[line]
    return "\n".join(lines)


def swap_quoted(line: str, i: int, j: int) -> str:
    """The line with its i-th and j-th quoted words swapped."""
    spans = [m.span() for m in re.finditer(r'"[a-z]+"', line)]
    (a0, a1), (b0, b1) = spans[i], spans[j]
    return line[:a0] + line[b0:b1] + line[a1:b0] + line[a0:a1] + line[b1:]


# --- gold rationales -------------------------------------------------------------------------------------


def test_brief_example_is_tripost_format() -> None:
    example = TASK.example(BRIEF)
    assert example.question == "Q: Sort the following words alphabetically:\nList: " + " ".join(BRIEF)
    assert example.rationale == BRIEF_RATIONALE
    assert example.answer == "apparition conference copra coupe ignore implement"
    assert TASK.verify(example, example.rationale).correct
    assert TASK.grade(example, example.rationale)


def test_tripost_nested_subpart_labels() -> None:
    rationale = TASK.example(["sioux", "fortescue", "purloin", "percept", "helmsman", "purcell", "forest"]).rationale
    assert "\n".join(rationale.splitlines()[9:15]) == (
        '(4) Now sort this subpart ["purloin" ? "percept" ? "purcell"] by looking at their second letters: '
        '"purloin"="u" (21), "percept"="e" (5), "purcell"="u" (21).\n'
        '(4.1) We now have: (5) "percept" < (21) ["purloin" ? "purcell"].\n'
        '(4.2) Now sort this subpart ["purloin" ? "purcell"] by looking at their third letters: '
        '"purloin"="r" (18), "purcell"="r" (18).\n'
        '(4.2.1) We now have: (18) ["purloin" ? "purcell"].\n'
        '(4.2.2) Now sort this subpart ["purloin" ? "purcell"] by looking at their fourth letters: '
        '"purloin"="l" (12), "purcell"="c" (3).\n'
        '(4.2.3) We now have: (3) "purcell" < (12) "purloin".'
    )


def test_sibling_subparts_count_up_and_short_words_sort_first() -> None:
    rationale = TASK.example(["stack", "stamp", "start", "steam", "steel", "car", "cart", "card"]).rationale
    labels = [step_label(line) for line in rationale.splitlines()]
    assert len(labels) == len(set(labels))
    assert {"(4.4)", "(4.4.1)", "(4.4.2)", "(4.5)", "(4.5.1)", "(4.6)"} <= set(labels)
    assert '"car"=" " (0), "cart"="t" (20), "card"="d" (4).' in rationale
    assert '(0) "car" < (4) "card" < (20) "cart".' in rationale


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("split", SPLITS)
def test_every_gold_rationale_verifies_and_grades(split: Any, seed: int) -> None:
    for example in TASK.generate(split, 40, seed):
        verdict = TASK.verify(example, example.rationale)
        assert verdict.correct, (example.question, verdict)
        assert TASK.grade(example, example.rationale)
        words = example.question.splitlines()[1].removeprefix("List: ").split()
        assert example.answer.split() == sorted(words)
        assert example.meta["n_words"] == len(words) == len(set(words))
        assert example.rationale.splitlines()[-1].startswith(FINAL_LABEL)


def test_generated_lists_tie_past_the_first_letter() -> None:
    examples = TASK.generate("train", 200, 0)
    assert sum("(3.1)" in e.rationale for e in examples) > 40  # subparts are common, not rare
    assert any("(3.2.1)" in e.rationale or "(4.2.1)" in e.rationale for e in TASK.generate("unseen", 200, 0))


# --- corrupted rationales --------------------------------------------------------------------------------

RUNOUT = TASK.example(["car", "cart", "card"])
BRIEF_EX = TASK.example(BRIEF)

# (name, example, corrupted rationale, expected step, expected line, reason fragment)
CORRUPTIONS: list[tuple[str, Example, str, str | None, int, str]] = [
    ("letter", BRIEF_EX, edit(BRIEF_RATIONALE, 0, sub('"coupe"="c"', '"coupe"="o"')), "(1)", 0,
     'The first letter of "coupe" is "c", not "o".'),
    ("index", BRIEF_EX, edit(BRIEF_RATIONALE, 0, sub('"a" (1)', '"a" (2)')), "(1)", 0,
     '"a" is letter number 1 of the alphabet, not 2.'),
    ("missing word", BRIEF_EX, edit(BRIEF_RATIONALE, 0, sub(', "coupe"="c" (3)', "")), "(1)", 0,
     'The word "coupe" is missing from this step.'),
    ("extra word", BRIEF_EX, edit(BRIEF_RATIONALE, 0, sub("(9).", '(9), "zoo"="z" (26).')), "(1)", 0,
     '"zoo" is not one of the words being sorted here.'),
    ("listed order", BRIEF_EX, edit(BRIEF_RATIONALE, 0, lambda s: swap_quoted(s, 0, 2)), "(1)", 0,
     'Keep the order of the list: "conference" comes before "apparition".'),
    ("order", BRIEF_EX, edit(BRIEF_RATIONALE, 1, sub('(1) "apparition" < (3) ["conference" ? "coupe" ? "copra"]',
     '(3) ["conference" ? "coupe" ? "copra"] < (1) "apparition"')), "(2)", 1,
     '"apparition" (1) should come before "conference" (3).'),
    ("tie not grouped", BRIEF_EX, edit(BRIEF_RATIONALE, 1, sub(' ? "copra"]', '] < (3) "copra"')), "(2)", 1,
     '"conference" and "copra" tie at (3), so group them in brackets.'),
    ("non-tie grouped", BRIEF_EX,
     edit(BRIEF_RATIONALE, 8, sub('"ignore" < (13) "implement"', '["ignore" ? "implement"]')), "(4.1)", 8,
     '"ignore" (7) and "implement" (13) do not tie, so they should not be grouped.'),
    ("now number", BRIEF_EX, edit(BRIEF_RATIONALE, 5, sub("(14)", "(15)")), "(3.3)", 5,
     '"conference" has number 14, not 15.'),
    ("tied order", BRIEF_EX, edit(BRIEF_RATIONALE, 3, lambda s: swap_quoted(s, 1, 2)), "(3.1)", 3,
     'Tied words keep their listed order: "coupe" comes before "copra".'),
    ("subpart letter", BRIEF_EX, edit(BRIEF_RATIONALE, 4, sub('"copra"="p"', '"copra"="r"')), "(3.2)", 4,
     'The third letter of "copra" is "p", not "r".'),
    ("subpart position", BRIEF_EX, edit(BRIEF_RATIONALE, 4, sub("third letters", "fourth letters")), "(3.2)", 4,
     "These words share their first 2 letters, so compare their third letters, not their fourth letters."),
    ("subpart group", BRIEF_EX, edit(BRIEF_RATIONALE, 7, sub('["ignore" ? "implement"]', '["implement" ? "ignore"]')),
     "(4)", 7, 'The next subpart to sort is ["ignore" ? "implement"].'),
    ("merge", BRIEF_EX, edit(BRIEF_RATIONALE, 6, lambda s: swap_quoted(s, 1, 2)), "(3.4)", 6,
     '"copra" comes before "coupe": their third letters are "p" (16) and "u" (21).'),
    ("merge missing", BRIEF_EX, edit(BRIEF_RATIONALE, 9, sub(' < "implement"', "")), "(4.2)", 9,
     'The word "implement" is missing from this step.'),
    ("last merge", BRIEF_EX, edit(BRIEF_RATIONALE, 10, lambda s: swap_quoted(s, 0, 5)), "(5)", 10,
     '"apparition" comes before "implement": their first letters are "a" (1) and "i" (9).'),
    ("final", BRIEF_EX, edit(BRIEF_RATIONALE, 11, sub("copra coupe", "coupe copra")), FINAL_LABEL, 11,
     '"copra" comes before "coupe"'),
    ("missing step", BRIEF_EX, drop(BRIEF_RATIONALE, 4), "(3.2)", 4,
     'Step (3.2) is missing: it should sort the subpart ["conference" ? "coupe" ? "copra"] by looking at their third'),
    ("missing final", BRIEF_EX, drop(BRIEF_RATIONALE, 11), FINAL_LABEL, 11,
     "The rationale stops before step (Final response)."),
    ("unparsable", BRIEF_EX, edit(BRIEF_RATIONALE, 2, lambda s: "(3) I think the words are fine."), "(3)", 2,
     'Step (3) should sort the subpart ["conference" ? "coupe" ? "copra"] by looking at their second letters.'),
    ("no label", BRIEF_EX, edit(BRIEF_RATIONALE, 3, sub("(3.1) ", "")), "(3.1)", 3,
     "This line has no step label; it should be step (3.1)."),
    ("wrong label", BRIEF_EX, edit(BRIEF_RATIONALE, 3, sub("(3.1)", "(9.9)")), "(3.1)", 3,
     "This line should be step (3.1), not (9.9)."),
    ("after final", BRIEF_EX, BRIEF_RATIONALE + "\n(6) More.", "(6)", 12, "Nothing should follow the final response."),
    ("run-out letter", RUNOUT, edit(RUNOUT.rationale, 6, sub('"car"=" "', '"car"="r"')), "(3.4)", 6,
     '"car" has no fourth letter, so it is written " " (0), not "r".'),
    ("run-out index", RUNOUT, edit(RUNOUT.rationale, 6, sub('" " (0)', '" " (1)')), "(3.4)", 6,
     "A word with no fourth letter counts as 0, not 1."),
    ("run-out merge", RUNOUT, edit(RUNOUT.rationale, 8, lambda s: swap_quoted(s, 0, 1)), "(3.6)", 8,
     '"car" comes before "card": "car" runs out of letters first.'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "example", "bad", "step", "line", "reason"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_corruption_is_found_at_its_step(
    name: str, example: Example, bad: str, step: str | None, line: int, reason: str
) -> None:
    verdict = TASK.verify(example, bad)
    assert not verdict.correct
    assert (verdict.step, verdict.line) == (step, line), verdict
    assert reason in verdict.reason, verdict.reason
    assert verdict.reason.endswith(".")
    improved = TASK.improve(example, bad, verdict)
    assert TASK.verify(example, improved).correct
    assert TASK.grade(example, improved)


def test_feedback_quotes_the_wrong_part() -> None:
    verdict = TASK.verify(BRIEF_EX, CORRUPTIONS[0][2])
    assert verdict.segment == '"coupe"="o" (3)'
    assert verdict.feedback == (
        'In step (1) the part ""coupe"="o" (3)" is incorrect. The first letter of "coupe" is "c", not "o".'
    )


# --- properties ------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(problems)
def test_gold_verifies(example: Example) -> None:
    assert TASK.verify(example, example.rationale).correct
    assert example.answer.split() == sorted(example.question.split("List: ")[1].split())
    labels = [step_label(line) for line in example.rationale.splitlines()]
    assert None not in labels and len(labels) == len(set(labels))


@settings(max_examples=150, deadline=None)
@given(problems, st.data())
def test_swapping_two_words_in_an_ordering_line_is_found_there(example: Example, data: st.DataObject) -> None:
    lines = example.rationale.splitlines()
    ordering = [i for i, line in enumerate(lines) if " We now have: " in line or " Hence, we have " in line]
    index = data.draw(st.sampled_from(ordering))
    n_quoted = len(re.findall(r'"[a-z]+"', lines[index]))
    i = data.draw(st.integers(0, n_quoted - 2))
    j = data.draw(st.integers(i + 1, n_quoted - 1))
    swapped = edit(example.rationale, index, lambda s: swap_quoted(s, i, j))
    verdict = TASK.verify(example, swapped)
    assert (verdict.correct, verdict.step, verdict.line) == (False, step_label(lines[index]), index), verdict
    assert TASK.verify(example, TASK.improve(example, swapped, verdict)).correct


@settings(max_examples=200, deadline=None)
@given(problems, st.text(), st.data())
def test_verifier_never_raises(example: Example, noise: str, data: st.DataObject) -> None:
    gold = example.rationale
    start = data.draw(st.integers(0, len(gold)))
    end = data.draw(st.integers(start, min(len(gold), start + 12)))
    for text in (noise, gold[:start] + noise + gold[end:], gold[:start], gold + "\n" + noise):
        verdict = TASK.verify(example, text)
        if verdict.correct:  # only whitespace at line edges is forgiven
            assert re.sub(r"\s+", "", text) == re.sub(r"\s+", "", gold)
        else:
            assert verdict.line is not None and verdict.reason.endswith(".")
        assert verdict.correct or TASK.verify(example, TASK.improve(example, text, verdict)).correct
        TASK.grade(example, text)
    odd = Example(question=noise, rationale=noise, answer=noise, split="train")
    TASK.verify(odd, gold)
    TASK.verify(odd, noise)


# --- generation and options ------------------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    for split in SPLITS:
        assert TASK.generate(split, 30, 3) == WordSortingTask().generate(split, 30, 3)
        assert TASK.generate(split, 30, 3) != TASK.generate(split, 30, 4)
    assert TASK.generate("train", 0) == []


def test_train_and_seen_never_overlap() -> None:
    train = {e.question for e in TASK.generate("train", 400, 0)}
    seen = {e.question for e in TASK.generate("seen", 100, 0)}
    assert len(train) == 400 and len(seen) == 100
    assert not train & seen
    assert all(held_out(q) for q in seen) and not any(held_out(q) for q in train)


def test_unseen_lists_are_longer() -> None:
    sizes = {split: {int(str(e.meta["n_words"])) for e in TASK.generate(split, 150, 1)} for split in SPLITS}
    assert sizes["train"] == sizes["seen"] == {2, 3, 4}
    assert sizes["unseen"] == {5, 6}
    custom = WordSortingTask(min_words=3, max_words=3, unseen_min_words=10, unseen_max_words=10)
    assert {len(e.answer.split()) for e in custom.generate("unseen", 20)} == {10}
    assert {len(e.answer.split()) for e in custom.generate("seen", 20)} == {3}


@pytest.mark.parametrize(
    "options",
    [
        {"min_words": 1},
        {"max_words": 1},
        {"unseen_min_words": 4},
        {"unseen_max_words": 4},
        {"unseen_max_words": 21},
        {"tie_rate": 1.5},
        {"tie_rate": -0.1},
        {"min_words": 2.5},
        {"max_words": True},
        {"words": ["ab", "cd"]},
        {"words": ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "Op"]},
        {"words": ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "ab"]},
    ],
)
def test_bad_options_raise(options: dict[str, Any]) -> None:
    with pytest.raises(TaskError, match=r"\.$"):
        WordSortingTask(**options)


def test_bad_requests_raise() -> None:
    with pytest.raises(TaskError):
        TASK.generate("test", 3)  # type: ignore[arg-type]
    with pytest.raises(TaskError):
        TASK.generate("train", -1)
    for words in (["car"], ["car", "car"], ["Car", "cart"], ["car", "ca t"]):
        with pytest.raises(TaskError):
            TASK.example(words)
    tiny = WordSortingTask(max_words=2, unseen_min_words=3, unseen_max_words=3, words=["ab", "cd", "ef"])
    assert len({e.question for e in tiny.generate("unseen", 6)}) == 6  # every order of the three words
    with pytest.raises(TaskError, match="ask for fewer"):
        tiny.generate("unseen", 7)


# --- grading and helpers ---------------------------------------------------------------------------------


def test_grade_and_extract_answer() -> None:
    example = BRIEF_EX
    assert TASK.extract_answer("So the answer is: a b c.") == "a b c"
    assert TASK.grade(example, "blah\n(Final response) So the answer is: " + example.answer + ".")
    assert TASK.grade(example, "The answer is " + example.answer)
    assert not TASK.grade(example, "So the answer is: " + " ".join(reversed(example.answer.split())) + ".")
    assert not TASK.grade(example, "no answer here")


def test_helpers_and_corpus() -> None:
    assert [ordinal(i) for i in (0, 1, 2, 8)] == ["first", "second", "third", "ninth"]
    assert (letter_number("a"), letter_number("z"), letter_number(" ")) == (1, 26, 0)
    assert TASK.name == "word_sorting" and TASK.tokenizer_level == "char" and TASK.summary.endswith(".")
    assert all(text.startswith(QUESTION_HEAD) for text in TASK.corpus(n_per_split=10))


def test_word_list() -> None:
    assert 380 <= len(WORDS) <= 450 and len(set(WORDS)) == len(WORDS)
    assert all(re.fullmatch(r"[a-z]{2,9}", w) for w in WORDS)
    assert sum(1 for a in WORDS for b in WORDS if a != b and b.startswith(a)) >= 30  # "car" / "cart" cases
    assert len({w[:3] for w in WORDS}) < len(WORDS) * 0.75  # plenty of shared 3-letter prefixes
