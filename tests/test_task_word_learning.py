"""WordLearningTask: the child-directed grammar, its Zipf frequencies, probes for surprisal and the word verifier."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks.base import FINAL_LABEL, SPLITS, Example, Split, TaskError, held_out
from node.tasks.word_learning import WordLearningTask

TASK = WordLearningTask()
VOCAB = TASK.vocabulary


def fits(words: Sequence[str], slots: Sequence[str]) -> bool:
    """Brute-force oracle: the words match the template's first len(words) slots."""
    return len(words) <= len(slots) and all(
        word == slot or (slot.isupper() and slot in VOCAB.get(word, ()))
        for word, slot in zip(words, slots, strict=False)
    )


def can_continue(words: Sequence[str]) -> bool:
    return any(fits(words, slots) for slots in TASK.templates)


def slope(frequencies: Sequence[float], ranks: Sequence[int]) -> float:
    """Least-squares slope of log frequency against log rank (1-based ranks of the sorted frequencies)."""
    xs = [math.log(r) for r in ranks]
    ys = [math.log(frequencies[r - 1]) for r in ranks]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def test_vocabulary_and_templates() -> None:
    assert 250 <= len(VOCAB) <= 350
    assert all(word == word.lower() and " " not in word for word in VOCAB)
    assert {"NOUN", "ANIMAL"} <= VOCAB["dog"] and VOCAB["her"] >= {"DET", "OBJ"} and VOCAB["orange"] >= {"ADJ", "FOOD"}
    assert {".", "?", "!"} <= set(VOCAB)
    assert 20 <= len(TASK.templates) <= 40
    for slots in TASK.templates:
        for slot in slots:
            assert (slot.isupper() and any(slot in tags for tags in VOCAB.values())) or slot in VOCAB, slot
    assert len(TASK.unseen_templates) == 4
    assert min(map(len, TASK.unseen_templates)) > max(map(len, TASK.train_templates))


@pytest.mark.parametrize("split", SPLITS)
def test_generated_examples_verify(split: Split) -> None:
    examples = TASK.generate(split, 300, seed=3)
    assert len(examples) == 300
    for ex in examples:
        assert TASK.verify(ex, ex.rationale).correct, ex
        assert TASK.grade(ex, ex.rationale)
        context = ex.question.split()
        words = ex.answer.split()
        assert 2 <= len(context) <= 4 and words[: len(context)] == context and len(words) > len(context)
        assert ex.rationale == f"(1) {ex.answer}\n{FINAL_LABEL} So the answer is {ex.answer} ."
        assert TASK.extract_answer(ex.rationale) == ex.answer
        unseen_lengths = set(map(len, TASK.unseen_templates))
        assert (len(words) in unseen_lengths) == (split == "unseen")


@pytest.mark.parametrize("split", SPLITS)
def test_sentences_are_grammatical_and_split(split: Split) -> None:
    sentences = TASK.sentences(500, seed=1, split=split)
    assert len(sentences) == 500
    assert all(TASK.is_grammatical(sentence) for sentence in sentences)
    assert all(sentence[-1] in ".?!" and "  " not in sentence for sentence in sentences)
    if split != "unseen":
        assert all(held_out(sentence) == (split == "seen") for sentence in sentences)


def test_determinism_and_disjointness() -> None:
    assert TASK.generate("train", 40, seed=1) == TASK.generate("train", 40, seed=1)
    assert TASK.generate("train", 40, seed=1) != TASK.generate("train", 40, seed=2)
    assert TASK.sentences(40, seed=1) == WordLearningTask().sentences(40, seed=1)
    train = {ex.question for ex in TASK.generate("train", 2000)}
    seen = {ex.question for ex in TASK.generate("seen", 300)}
    assert train.isdisjoint(seen)


def test_zipf_frequencies() -> None:
    sentences = TASK.sentences(20_000, seed=0)
    counts = Counter(word for sentence in sentences for word in sentence.split())
    total = sum(counts.values())
    frequencies = sorted((count / total for count in counts.values()), reverse=True)
    every_rank = range(1, len(frequencies) + 1)
    log_spaced = sorted({round(1.25**i) for i in range(40) if round(1.25**i) <= len(frequencies)})
    assert -1.3 <= slope(frequencies, every_rank) <= -0.7
    assert -1.15 <= slope(frequencies, log_spaced) <= -0.85  # not dominated by the finite vocabulary's tail
    expected = TASK.word_frequencies(0)
    assert set(expected) == set(VOCAB) and all(f > 0 for f in expected.values())
    assert math.isclose(sum(expected.values()), 1.0)
    assert max(abs(expected[word] - counts[word] / total) for word in VOCAB) < 0.003


def test_seed_shuffles_which_content_words_are_frequent() -> None:
    def top_nouns(seed: int) -> list[str]:
        frequencies = TASK.word_frequencies(seed)
        nouns = [word for word in VOCAB if "ANIMAL" in VOCAB[word]]
        return sorted(nouns, key=lambda word: -frequencies[word])[:5]

    assert top_nouns(0) != top_nouns(1)
    assert TASK.word_frequencies(0)["the"] == TASK.word_frequencies(1)["the"]  # function words keep their ranks
    assert WordLearningTask(zipf_exponent=2.0).word_frequencies(0) != TASK.word_frequencies(0)


def test_test_words_have_contexts_and_spread_over_ranks() -> None:
    words = TASK.test_words()
    assert 80 <= len(words) <= 120 and len(set(words)) == len(words)
    frequencies = TASK.word_frequencies(0)
    content = sorted(
        (w for w in VOCAB if VOCAB[w] & {"NOUN", "ADJ", "VT", "VI", "PLACE"}), key=lambda w: -frequencies[w]
    )
    ranks = sorted(content.index(word) for word in words)
    assert ranks[10] < len(content) / 4 and ranks[-10] > 3 * len(content) / 4
    for word in words:
        contexts = TASK.test_contexts(word, 5, seed=2)
        assert len(contexts) == 5
        for context in contexts:
            prefix = [*context.split(), word]
            assert len(prefix) >= 2 and can_continue(prefix), (context, word)
    assert TASK.test_contexts("dog", 20, seed=1) == TASK.test_contexts("dog", 20, seed=1)
    assert TASK.test_contexts("at", 3) == ["look"] * 3
    with pytest.raises(TaskError, match=r'The word "xyzzy" is not in the vocabulary\.'):
        TASK.test_contexts("xyzzy", 3)
    with pytest.raises(TaskError, match="never follows a context"):
        TASK.test_contexts("look", 3)


def rationale(words: Sequence[str]) -> str:
    sentence = " ".join(words)
    return f"(1) {sentence}\n{FINAL_LABEL} So the answer is {sentence} ."


def test_corrupted_words_are_caught_exactly() -> None:
    rng = random.Random(0)
    vocabulary = sorted(VOCAB)
    for ex in TASK.generate("train", 40, seed=5) + TASK.generate("unseen", 20, seed=5):
        words = ex.answer.split()
        k = len(ex.question.split())
        for i in range(len(words)):
            impossible = [w for w in rng.sample(vocabulary, 60) if not can_continue([*words[:i], w])]
            assert impossible, (words, i)
            for bad in (impossible[0], "xyzzy"):
                attempt = [*words[:i], bad, *words[i + 1 :]]
                problem = TASK.check_sentence(attempt)  # the grammar alone, at every position
                assert problem is not None and problem[0] == i, (attempt, problem)
                verdict = TASK.verify(ex, rationale(attempt))
                assert (verdict.correct, verdict.step, verdict.line, verdict.segment) == (
                    False,
                    f"(word {i + 1})",
                    0,
                    bad,
                )
                if i < k:
                    assert verdict.reason.startswith(f'The sentence should start with "{ex.question}"')
                elif bad == "xyzzy":
                    assert verdict.reason == 'The word "xyzzy" is not in the vocabulary.'
                else:
                    prefix = " ".join(words[:i])
                    assert verdict.reason == f'The word "{bad}" cannot follow "{prefix}" in any sentence pattern.'


def example(context: str) -> Example:
    return Example(context, "", "", "train")


def test_reason_sentences_and_structure() -> None:
    ex = example("the big")
    verdict = TASK.verify(ex, rationale(["the", "big", "runs", "."]))
    assert verdict.reason == 'The word "runs" cannot follow "the big" in any sentence pattern.'
    assert (verdict.step, verdict.segment) == ("(word 3)", "runs")
    assert verdict.feedback == f'In step (word 3) the part "runs" is incorrect. {verdict.reason}'
    unfinished = TASK.verify(ex, rationale(["the", "big", "dog"]))
    assert (unfinished.step, unfinished.segment) == ("(word 4)", None)
    assert unfinished.reason == 'The sentence stops after "the big dog" before any sentence pattern is complete.'
    short = TASK.verify(ex, rationale(["the"]))
    assert short.step == "(word 2)" and short.reason == 'The sentence stops before the context "the big" is complete.'
    good = "(1) the big dog sleeps ."
    assert TASK.verify(ex, good).step == FINAL_LABEL
    assert TASK.verify(ex, good + f"\n{FINAL_LABEL} So the answer is the big dog .").line == 1
    assert TASK.verify(ex, good + f"\n{FINAL_LABEL} So the answer is the big dog sleeps . .").correct
    extra = TASK.verify(ex, good + f"\n{FINAL_LABEL} So the answer is the big dog sleeps . .\nmore")
    assert (extra.line, extra.reason) == (2, "The rationale goes on after the final response.")
    first = TASK.verify(ex, "the big dog sleeps .")
    assert (first.step, first.line) == ("(1)", 0)
    assert TASK.verify(example(""), "(1) runs .").reason == 'No sentence pattern starts with the word "runs".'


def test_grade_accepts_any_grammatical_continuation() -> None:
    ex = example("look at")
    assert TASK.grade(ex, "So the answer is look at the cat ! .")
    assert TASK.grade(ex, "So the answer is look at the little duck ! .")
    assert not TASK.grade(ex, "So the answer is look at the cat .")  # the final " ." marks the end
    assert not TASK.grade(ex, "So the answer is where is the cat ? .")
    assert not TASK.grade(ex, "no answer here")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"zipf_exponent": 0}, "zipf_exponent must be a number above 0"),
        ({"zipf_exponent": "1"}, "zipf_exponent must be a number above 0"),
        ({"held_out_templates": 0}, "held_out_templates must be between 1 and"),
        ({"context_words": (3, 2)}, r"context_words must be \(low, high\)"),
        ({"context_words": 3}, r"context_words must be a pair of whole numbers"),
        ({"context_words": (1.5, 2)}, r"context_words must be a pair of whole numbers"),
        ({"zipf_exponent": True}, "zipf_exponent must be a number above 0"),
        ({"context_words": (5, 6)}, r"context_words must be \(low, high\)"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        WordLearningTask(**options)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(TaskError, match="is not one of"):
        TASK.generate("dev", 2)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="must not be negative"):
        TASK.sentences(-1)
    assert TASK.generate("seen", 0) == [] and TASK.test_contexts("dog", 0) == []


@settings(max_examples=300, deadline=None)
@given(
    context=st.text(max_size=30),
    text=st.one_of(
        st.text(max_size=200),
        st.lists(st.sampled_from([*sorted(VOCAB), "zz"]), max_size=14).map(lambda ws: "(1) " + " ".join(ws)),
    ),
)
def test_verify_never_raises(context: str, text: str) -> None:
    ex = example(context)
    verdict = TASK.verify(ex, text)
    assert verdict.correct or verdict.reason
    TASK.grade(ex, text)


def test_improve_keeps_a_good_sentence_and_fixes_the_rest() -> None:
    ex = Example("look at", rationale(["look", "at", "the", "dog", "!"]), "look at the dog !", "train")
    own = "(1) look at the cat !\nSo the answer is nothing ."  # the learner's own grammatical sentence
    assert TASK.improve(ex, own, TASK.verify(ex, own)) == rationale(["look", "at", "the", "cat", "!"])
    wrong = "(1) look at the runs !"
    assert TASK.improve(ex, wrong, TASK.verify(ex, wrong)) == ex.rationale
    assert TASK.improve(ex, ex.rationale, TASK.verify(ex, ex.rationale)) == ex.rationale


def test_running_out_of_held_out_contexts_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.tasks.word_learning.held_out", lambda question: False)
    with pytest.raises(TaskError, match="Could not draw 1 seen items"):
        TASK.generate("seen", 1)


def test_texts_join_consecutive_sentences_and_one_per_text_is_the_sentence_corpus() -> None:
    task = WordLearningTask()
    assert task.texts(5, seed=3) == task.sentences(5, seed=3)
    texts = task.texts(4, seed=3, sentences_per_text=3)
    assert texts == [" ".join(task.sentences(12, seed=3)[i * 3 : (i + 1) * 3]) for i in range(4)]
    assert all(sum(word in {".", "!", "?"} for word in text.split()) == 3 for text in texts)
    with pytest.raises(TaskError, match="at least one sentence"):
        task.texts(2, sentences_per_text=0)
