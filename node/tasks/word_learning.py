"""Child-directed speech from a template grammar: the corpus of TnD's word-learning study (Ma, Wang, Chai 2024).

Sentences are lowercase words and punctuation tokens separated by single spaces, so a word-level
tokenizer is a whitespace split: ``look at the big dog !``. A sentence is a template of
:mod:`node.tasks.cdi_words` (a POS sequence with fixed words) with each slot filled by a word of that
tag. Within a CDI category, word frequencies follow Zipf's law (weight ``1 / rank ** zipf_exponent``);
the seed shuffles the ranks of content words, so which noun is frequent does not depend on the noun.

``sentences(n, seed)`` is the raw corpus. ``generate`` turns sentences into continuation examples:
the question is the sentence's first k words (a context) and the gold rationale is ::

    (1) look at the big dog !
    (Final response) So the answer is look at the big dog ! .

(the trailing " ." ends the sentence "So the answer is ..."; grading reads the answer without it).
Any grammatical sentence that starts with the context is right, so ``grade`` checks that rather
than an exact match. The unseen split uses the longest templates, which train never does.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from typing import ClassVar

from node.tasks.base import FINAL_LABEL, SPLITS, Example, Split, Task, TaskError, Verdict, held_out, step_label
from node.tasks.cdi_words import INTRANSITIVE, LEXICON, TEMPLATES, TRANSITIVE

Template = tuple[str, ...]
SENTENCE_LABEL = "(1)"


def _is_slot(item: str) -> bool:
    return item.isupper()  # "NOUN", "VI_ING"; fixed words and punctuation are not upper case


def _build_lexicon(seed: int, exponent: float) -> dict[str, dict[str, float]]:
    """tag -> {word: Zipf weight}; a word in several entries with the same tag keeps its largest weight."""
    pools: dict[str, dict[str, float]] = {}

    def add(tag: str, word: str, rank: int) -> None:
        pool = pools.setdefault(tag, {})
        pool[word] = max(pool.get(word, 0.0), rank**-exponent)

    def order(category: str, items: list[str], shuffled: bool) -> list[str]:
        if shuffled:  # which content word is frequent is the seed's choice, not the word list's
            random.Random(f"word_learning:ranks:{seed}:{category}").shuffle(items)
        return items

    for category, tags, shuffled, words in LEXICON:
        for rank, word in enumerate(order(category, words.split(), shuffled), start=1):
            for tag in tags:
                add(tag, word, rank)
    verbs: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}  # base -> [(tags, forms)]
    tables: tuple[tuple[tuple[str, ...], Sequence[tuple[str, ...]]], ...] = (
        (("VT", "VT3"), TRANSITIVE),
        (("VI", "VI3", "VI_ING"), INTRANSITIVE),
    )
    for tags, table in tables:
        for verb_forms in table:
            verbs.setdefault(verb_forms[0], []).append((tags, verb_forms))
    for rank, base in enumerate(order("actions", list(verbs), True), start=1):  # a verb's forms share a rank
        for tags, verb_forms in verbs[base]:
            for tag, word in zip(tags, verb_forms, strict=True):
                add(tag, word, rank)
    return pools


VOCABULARY: dict[str, frozenset[str]] = {}
for _tag, _pool in _build_lexicon(0, 1.0).items():
    for _word in _pool:
        VOCABULARY[_word] = VOCABULARY.get(_word, frozenset()) | {_tag}
TEMPLATE_SLOTS: tuple[Template, ...] = tuple(tuple(template.split()) for template in TEMPLATES)


class WordLearningTask(Task):
    """Continue a child-directed sentence; the corpus for per-word surprisal learning curves."""

    name: ClassVar[str] = "word_learning"
    summary: ClassVar[str] = "Child-directed sentences from a CDI word list with Zipf word frequencies."
    tokenizer_level = "word"

    def __init__(
        self, *, zipf_exponent: float = 1.0, context_words: tuple[int, int] = (2, 4), held_out_templates: int = 4
    ) -> None:
        if isinstance(zipf_exponent, bool) or not isinstance(zipf_exponent, int | float) or not 0 < zipf_exponent <= 3:
            raise TaskError(f"zipf_exponent must be a number above 0 and at most 3 (got {zipf_exponent!r}).")
        if not 0 < held_out_templates < len(TEMPLATE_SLOTS):
            raise TaskError(f"held_out_templates must be between 1 and {len(TEMPLATE_SLOTS) - 1}.")
        by_length = sorted(range(len(TEMPLATE_SLOTS)), key=lambda i: (-len(TEMPLATE_SLOTS[i]), i))
        self._unseen_ids = sorted(by_length[:held_out_templates])
        self._train_ids = sorted(by_length[held_out_templates:])
        shortest = min(len(TEMPLATE_SLOTS[i]) for i in self._train_ids)
        pair = tuple(context_words) if isinstance(context_words, tuple | list) else ()
        if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
            raise TaskError(f"context_words must be a pair of whole numbers (low, high) (got {context_words!r}).")
        low, high = pair
        if not 1 <= low <= high or low > shortest - 1:
            raise TaskError(f"context_words must be (low, high) with 1 <= low <= high and low < {shortest}.")
        self.zipf_exponent = float(zipf_exponent)
        self.context_words = (low, high)
        self._pools: dict[int, dict[str, tuple[list[str], list[float], dict[str, float]]]] = {}

    # The grammar ----------------------------------------------------------------------------------

    @property
    def vocabulary(self) -> dict[str, frozenset[str]]:
        """Every word (and punctuation token) with its POS tags."""
        return dict(VOCABULARY)

    @property
    def templates(self) -> tuple[Template, ...]:
        """All sentence templates: slot tags (upper case) and fixed words."""
        return TEMPLATE_SLOTS

    @property
    def train_templates(self) -> tuple[Template, ...]:
        return tuple(TEMPLATE_SLOTS[i] for i in self._train_ids)

    @property
    def unseen_templates(self) -> tuple[Template, ...]:
        return tuple(TEMPLATE_SLOTS[i] for i in self._unseen_ids)

    def _tables(self, seed: int) -> dict[str, tuple[list[str], list[float], dict[str, float]]]:
        """Per tag: its words, cumulative weights (for sampling) and probabilities (for frequencies)."""
        if seed not in self._pools:
            tables = {}
            for tag, pool in _build_lexicon(seed, self.zipf_exponent).items():
                words = sorted(pool)
                total = sum(pool.values())
                cumulative = list(itertools.accumulate(pool[w] for w in words))
                tables[tag] = (words, cumulative, {w: pool[w] / total for w in words})
            self._pools[seed] = tables
        return self._pools[seed]

    def _slot_probability(self, seed: int, slot: str, word: str) -> float:
        """P(word | slot): its Zipf share of the tag's pool, or 1 for the fixed word itself."""
        if _is_slot(slot):
            return self._tables(seed)[slot][2].get(word, 0.0)
        return 1.0 if slot == word else 0.0

    def _fill(self, rng: random.Random, seed: int, slots: Sequence[str]) -> list[str]:
        tables = self._tables(seed)
        return [
            rng.choices(tables[slot][0], cum_weights=tables[slot][1])[0] if _is_slot(slot) else slot for slot in slots
        ]

    def _sentence(self, rng: random.Random, seed: int, split: Split) -> tuple[int, list[str]]:
        index = rng.choice(self._unseen_ids if split == "unseen" else self._train_ids)
        return index, self._fill(rng, seed, TEMPLATE_SLOTS[index])

    # The corpus and the word-learning probes ------------------------------------------------------

    def sentences(self, n: int, seed: int = 0, split: Split = "train") -> list[str]:
        """The raw corpus: n sentences. Train and seen split by held_out(sentence); unseen uses held-out templates."""
        _check(split, n)
        rng = random.Random(f"word_learning:sentences:{seed}:{split}")
        out: list[str] = []
        for _ in _attempts(n, split):
            if len(out) == n:
                break
            sentence = " ".join(self._sentence(rng, seed, split)[1])
            if split == "unseen" or held_out(sentence) == (split == "seen"):
                out.append(sentence)
        return out

    def texts(self, n: int, seed: int = 0, sentences_per_text: int = 1, split: Split = "train") -> list[str]:
        """n corpus texts, each `sentences_per_text` consecutive sentences of `sentences` joined by a
        space: child-directed speech that goes on past one utterance, as TnD's corpus texts do."""
        if sentences_per_text < 1:
            raise TaskError(f"A text needs at least one sentence (got {sentences_per_text}).")
        drawn = self.sentences(n * sentences_per_text, seed, split)
        k = sentences_per_text
        return [" ".join(drawn[i * k : (i + 1) * k]) for i in range(n)]

    def word_frequencies(self, seed: int = 0) -> dict[str, float]:
        """Each word's expected share of the tokens of the train corpus made with this seed (sums to 1)."""
        counts = dict.fromkeys(VOCABULARY, 0.0)
        tokens = 0.0
        for slots in self.train_templates:  # templates are drawn uniformly
            tokens += len(slots)
            for slot in slots:
                if not _is_slot(slot):
                    counts[slot] += 1.0
                    continue
                for word, probability in self._tables(seed)[slot][2].items():
                    counts[word] += probability
        return {word: count / tokens for word, count in counts.items()}

    def test_words(self) -> list[str]:
        """About 100 content words (nouns, adjectives, verbs): every other word of each CDI content category.

        The seed shuffles ranks within categories, so for any seed these spread over the frequency ranks.
        """
        chosen: dict[str, None] = {}
        for category, _, shuffled, words in LEXICON:
            if shuffled and category not in ("names", "sounds"):
                chosen.update(dict.fromkeys(words.split()[::2]))
        verbs = dict.fromkeys(words[0] for words in TRANSITIVE + INTRANSITIVE)
        chosen.update(dict.fromkeys(list(verbs)[::2]))
        return list(chosen)

    def test_contexts(self, word: str, n: int, seed: int = 0) -> list[str]:
        """n sentence prefixes (at least one word) whose next word is `word`, drawn as the train corpus would.

        For per-word surprisal, -log2 P(word | context): a (template, position) is chosen with probability
        proportional to how often the word fills it, then the words before it are sampled.
        """
        if word not in VOCABULARY:
            raise TaskError(f'The word "{word}" is not in the vocabulary.')
        _check("train", n)
        places = [
            (slots, position, self._slot_probability(seed, slot, word))
            for slots in self.train_templates
            for position, slot in enumerate(slots)
            if position > 0
        ]
        places = [place for place in places if place[2] > 0]
        if not places:
            raise TaskError(f'The word "{word}" never follows a context in the training sentences.')
        rng = random.Random(f"word_learning:contexts:{seed}:{word}")
        picks = rng.choices(places, weights=[weight for _, _, weight in places], k=n)
        return [" ".join(self._fill(rng, seed, slots[:position])) for slots, position, _ in picks]

    def corpus(self, seed: int = 0, n_per_split: int = 200) -> list[str]:
        """Generated examples, plus every word of the vocabulary once: a rare word must still be a
        token of its own, or its surprisal could not be measured (it would be <unk>)."""
        return [*super().corpus(seed, n_per_split), " ".join(sorted(VOCABULARY))]

    # Examples, verification and grading -----------------------------------------------------------

    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """n continuation examples; train and seen are split by held_out(question) (the context)."""
        _check(split, n)
        rng = random.Random(f"word_learning:{seed}:{split}")
        low, high = self.context_words
        examples: list[Example] = []
        for _ in _attempts(n, split):
            if len(examples) == n:
                break
            index, words = self._sentence(rng, seed, split)
            k = rng.randint(low, min(high, len(words) - 1))
            question = " ".join(words[:k])
            if split != "unseen" and held_out(question) != (split == "seen"):
                continue
            sentence = " ".join(words)
            meta = {"template": index, "context_words": k, "length": len(words)}
            examples.append(Example(question, _rationale(sentence), sentence, split, meta))
        return examples

    def check_sentence(self, words: Sequence[str], context: Sequence[str] = ()) -> tuple[int, str] | None:
        """None for a grammatical sentence that starts with `context`, else (0-based index of the first
        wrong word, or len(words) when the sentence is unfinished; the reason sentence)."""
        states = {(t, 0) for t in range(len(TEMPLATE_SLOTS))}  # (template, words matched so far)
        for i, word in enumerate(words):
            if i < len(context) and word != context[i]:
                return i, f'The sentence should start with "{" ".join(context)}", but word {i + 1} is "{word}".'
            if word not in VOCABULARY:
                return i, f'The word "{word}" is not in the vocabulary.'
            tags = VOCABULARY[word]
            states = {
                (t, p + 1)
                for t, p in states
                if p < len(TEMPLATE_SLOTS[t]) and (TEMPLATE_SLOTS[t][p] == word or TEMPLATE_SLOTS[t][p] in tags)
            }
            if not states:
                if i == 0:
                    return i, f'No sentence pattern starts with the word "{word}".'
                return i, f'The word "{word}" cannot follow "{" ".join(words[:i])}" in any sentence pattern.'
        if len(words) < len(context):
            return len(words), f'The sentence stops before the context "{" ".join(context)}" is complete.'
        if not any(p == len(TEMPLATE_SLOTS[t]) for t, p in states):
            tail = " ".join(words) if words else "nothing"
            return len(words), f'The sentence stops after "{tail}" before any sentence pattern is complete.'
        return None

    def is_grammatical(self, sentence: str) -> bool:
        """Whether a whitespace-separated sentence matches some template (train or unseen)."""
        return self.check_sentence(sentence.split()) is None

    def verify(self, example: Example, rationale: str) -> Verdict:
        """Check the sentence word by word (step "(word i)", line 0), then the final response."""
        lines = rationale.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        first = lines[0] if lines else ""
        if step_label(first) != SENTENCE_LABEL:
            reason = f'The first line should be "{SENTENCE_LABEL}" followed by the sentence.'
            return Verdict(correct=False, step=SENTENCE_LABEL, line=0, segment=first or None, reason=reason)
        words = first[len(SENTENCE_LABEL) :].split()
        problem = self.check_sentence(words, example.question.split())
        if problem is not None:
            i, reason = problem
            segment = words[i] if i < len(words) else None
            return Verdict(correct=False, step=f"(word {i + 1})", line=0, segment=segment, reason=reason)
        sentence = " ".join(words)
        final = lines[1] if len(lines) > 1 else ""
        if step_label(final) != FINAL_LABEL or self.extract_answer(final) != sentence:
            reason = f'The final response should be "{FINAL_LABEL} So the answer is {sentence} ."'
            return Verdict(correct=False, step=FINAL_LABEL, line=1, segment=final or None, reason=reason)
        if len(lines) > 2:
            reason = "The rationale goes on after the final response."
            return Verdict(correct=False, step=step_label(lines[2]), line=2, segment=lines[2], reason=reason)
        return Verdict(correct=True)

    def improve(self, example: Example, rationale: str, verdict: Verdict) -> str:
        """The attempt's own sentence, properly finished, when only the final response was wrong; else the gold."""
        if verdict.correct:
            return rationale
        if verdict.line:  # the sentence line (0) passed, so the learner's continuation is kept
            return _rationale(" ".join(rationale.splitlines()[0][len(SENTENCE_LABEL) :].split()))
        return example.rationale

    def grade(self, example: Example, output: str) -> bool:
        """Right when the final answer is a grammatical sentence starting with the context (not an exact match)."""
        answer = self.extract_answer(output)
        return answer is not None and self.check_sentence(answer.split(), example.question.split()) is None


def _rationale(sentence: str) -> str:
    return f"{SENTENCE_LABEL} {sentence}\n{FINAL_LABEL} So the answer is {sentence} ."


def _attempts(n: int, split: str) -> Iterator[int]:
    """Draws allowed for n kept items; seen keeps about 1 in 10, so running out means a bad option."""
    yield from range(1000 * (n + 10))
    raise TaskError(f"Could not draw {n} {split} items; with these options too few contexts are held out.")


def _check(split: str, n: int) -> None:
    if split not in SPLITS:
        raise TaskError(f'The split "{split}" is not one of "train", "seen", "unseen".')
    if n < 0:
        raise TaskError(f"The number of examples must not be negative (got {n}).")
