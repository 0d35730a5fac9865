"""Word sorting in TriPosT's scripted step format (Yu et al. 2023, after BIG-bench word_sorting).

A question lists distinct lowercase words; the gold rationale sorts them letter by letter::

    (1) The first letter: "cart"="c" (3), "ant"="a" (1), "car"="c" (3).
    (2) We now have: (1) "ant" < (3) ["cart" ? "car"].
    (3) Now sort this subpart ["cart" ? "car"] by looking at their second letters: "cart"="a" (1), "car"="a" (1).
    (3.1) We now have: (1) ["cart" ? "car"].
    ... (3.4) … fourth letters: "cart"="t" (20), "car"=" " (0).  (3.5) We now have: (0) "car" < (20) "cart".
    (3.6) Hence, we have "car" < "cart".
    (4) Hence, we have "ant" < "car" < "cart".
    (Final response) So the answer is: ant car cart.

Conventions (gold follows them, the verifier holds a rationale to them): a word that has run out of letters
sorts first, written " " with number 0; tied words (joined by ``?``) keep their order from the line being
sorted, as TriPosT's script does; a subpart that ties again as a whole is re-sorted at the same level
((3.2), (3.3) …), one that splits into several ties nests deeper ((4.2), (4.2.1) …).  TriPosT's script gives
sibling sub-subparts the same label; here they count up, so every label is unique.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from node.tasks.base import FINAL_LABEL, SPLITS, Example, Split, Task, TaskError, Verdict, held_out, step_label
from node.tasks.wordlist import WORDS

QUESTION_HEAD = "Q: Sort the following words alphabetically:\nList: "
_ORDINALS = (  # noqa: SIM905 (one line of text reads better than 20 list items)
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
_WORD = re.compile(r"[a-z]+")
_ENTRY = re.compile(r'"([^"]*)"="([^"]*)" \((\d{1,6})\)')  # "word"="letter" (number)
_NOW_ITEM = re.compile(r'\((\d{1,6})\) (?:"([^"]*)"|\[(.*)\])')  # (3) "word" or (3) ["a" ? "b"]
_QUOTED = re.compile(r'"([^"]*)"')
_SUBPART = re.compile(r"Now sort this subpart \[(.*?)\] by looking at their (\S+) letters: (.*)\.")

Kind = Literal["first", "subpart", "now", "hence", "final"]


def ordinal(index: int) -> str:
    """The ordinal word of a 0-based letter position: 0 -> "first"."""
    return _ORDINALS[index] if 0 <= index < len(_ORDINALS) else f"{index + 1}th"


def letter_at(word: str, index: int) -> str:
    """The word's letter at a 0-based position, or " " once the word has run out of letters."""
    return word[index] if index < len(word) else " "


def letter_number(letter: str) -> int:
    """A letter's place in the alphabet; " " (run out of letters) is 0 so shorter words sort first."""
    return 0 if letter == " " else ord(letter) - ord("a") + 1


def _quote(word: str) -> str:
    return f'"{word}"'


def _bracket(words: Sequence[str]) -> str:
    return "[" + " ? ".join(map(_quote, words)) + "]"


@dataclass(frozen=True)
class _Step:
    """One expected line: what it is about, in the order its words are listed."""

    label: str
    kind: Kind
    words: tuple[str, ...]
    index: int = 0  # 0-based letter position, for "first", "subpart" and "now"


def _groups(words: Sequence[str], index: int) -> list[tuple[str, ...]]:
    """Words grouped by their letter number at a position, groups by number, words in listed order."""
    by_number: dict[int, list[str]] = {}
    for word in words:
        by_number.setdefault(letter_number(letter_at(word, index)), []).append(word)
    return [tuple(by_number[n]) for n in sorted(by_number)]


def _splittable(group: Sequence[str], index: int) -> bool:
    # Words that all ran out of letters together are equal: nothing is left to sort (guards duplicates).
    return len(group) > 1 and any(index < len(word) for word in group)


def _plan_subpart(group: tuple[str, ...], index: int, prefix: str) -> list[_Step]:
    steps = [_Step(f"({prefix})", "subpart", group, index), _Step(f"({prefix}.1)", "now", group, index)]
    k = 1
    groups = _groups(group, index)
    while len(groups) == 1 and _splittable(group, index):
        index, k = index + 1, k + 2
        steps += [_Step(f"({prefix}.{k - 1})", "subpart", group, index), _Step(f"({prefix}.{k})", "now", group, index)]
        groups = _groups(group, index)
    ties = [g for g in groups if _splittable(g, index)]
    for j, tie in enumerate(ties):
        steps += _plan_subpart(tie, index + 1, f"{prefix}.{k + 1 + j}")
    steps.append(_Step(f"({prefix}.{k + 1 + len(ties)})", "hence", group))
    return steps


def _plan(words: tuple[str, ...]) -> list[_Step]:
    """Every step of the gold rationale, in order."""
    steps = [_Step("(1)", "first", words), _Step("(2)", "now", words)]
    ties = [g for g in _groups(words, 0) if _splittable(g, 0)]
    for i, tie in enumerate(ties):
        steps += _plan_subpart(tie, 1, str(3 + i))
    return [*steps, _Step(f"({3 + len(ties)})", "hence", words), _Step(FINAL_LABEL, "final", words)]


def _entries(words: Sequence[str], index: int) -> str:
    return ", ".join(f'"{w}"="{letter_at(w, index)}" ({letter_number(letter_at(w, index))})' for w in words)


def _render(step: _Step) -> str:
    if step.kind == "first":
        return f"{step.label} The first letter: {_entries(step.words, 0)}."
    if step.kind == "subpart":
        head = f"Now sort this subpart {_bracket(step.words)} by looking at their {ordinal(step.index)} letters"
        return f"{step.label} {head}: {_entries(step.words, step.index)}."
    if step.kind == "now":
        parts = [
            f"({letter_number(letter_at(g[0], step.index))}) " + (_bracket(g) if len(g) > 1 else _quote(g[0]))
            for g in _groups(step.words, step.index)
        ]
        return f"{step.label} We now have: {' < '.join(parts)}."
    ordered = sorted(step.words)
    if step.kind == "hence":
        return f"{step.label} Hence, we have {' < '.join(map(_quote, ordered))}."
    return f"{FINAL_LABEL} So the answer is: {' '.join(ordered)}."


def _describe(step: _Step) -> str:
    """What a step should do, for "missing" and "wrong kind of step" reasons."""
    return {
        "first": "give the first letter of every word",
        "subpart": f"sort the subpart {_bracket(step.words)} by looking at their {ordinal(step.index)} letters",
        "now": 'order the words by their numbers ("We now have: ...")',
        "hence": 'merge the sorted words ("Hence, we have ...")',
        "final": 'give the sorted words ("So the answer is: ...")',
    }[step.kind]


class _Wrong(Exception):
    """A step found wrong: the reason sentence and the quoted part (internal; verify turns it into a Verdict)."""

    def __init__(self, reason: str, segment: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.segment = reason, segment


def _check_words(listed: Sequence[str], expected: Sequence[str], parts: Sequence[str]) -> None:
    """Every listed word is expected and listed once; every expected word is listed."""
    seen: set[str] = set()
    for word, part in zip(listed, parts, strict=True):
        if word not in expected:
            raise _Wrong(f'"{word}" is not one of the words being sorted here.', part)
        if word in seen:
            raise _Wrong(f'"{word}" is listed twice.', part)
        seen.add(word)
    for word in expected:
        if word not in seen:
            raise _Wrong(f'The word "{word}" is missing from this step.')


def _why_before(a: str, b: str) -> str:
    """Why a sorts before b, as a clause."""
    p = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if p >= len(a):
        return f'"{a}" runs out of letters first'
    return f'their {ordinal(p)} letters are "{a[p]}" ({letter_number(a[p])}) and "{b[p]}" ({letter_number(b[p])})'


def _check_sorted(listed: Sequence[str], expected: Sequence[str], segment: str) -> None:
    _check_words(listed, expected, [segment] * len(listed))
    for a, b in zip(sorted(expected), listed, strict=True):
        if a != b:
            raise _Wrong(f'"{a}" comes before "{b}": {_why_before(a, b)}.', segment)


def _check_entries(text: str, step: _Step, source: str) -> None:
    """A letter-extraction list: "w"="l" (n), … for the step's words in their listed order."""
    pieces = text.split(", ")
    parsed = []
    for piece in pieces:
        match = _ENTRY.fullmatch(piece)
        if match is None:
            raise _Wrong('Each entry should read "word"="letter" (number).', piece)
        parsed.append((match.group(1), match.group(2), int(match.group(3)), piece))
    _check_words([w for w, _, _, _ in parsed], step.words, pieces)
    pos = ordinal(step.index)
    for (word, letter, number, piece), expected in zip(parsed, step.words, strict=True):
        if word != expected:
            raise _Wrong(f'Keep the order of the {source}: "{expected}" comes before "{word}".', piece)
        right = letter_at(word, step.index)
        if letter != right:
            if right == " ":
                raise _Wrong(f'"{word}" has no {pos} letter, so it is written " " (0), not "{letter}".', piece)
            raise _Wrong(f'The {pos} letter of "{word}" is "{right}", not "{letter}".', piece)
        if number != letter_number(letter):
            if letter == " ":
                raise _Wrong(f"A word with no {pos} letter counts as 0, not {number}.", piece)
            raise _Wrong(f'"{letter}" is letter number {letter_number(letter)} of the alphabet, not {number}.', piece)


def _unquote(text: str, sep: str) -> list[str] | None:
    """The words of '"a"<sep>"b"…', or None when the text is not such a list."""
    matches = [_QUOTED.fullmatch(q) for q in text.split(sep)]
    return [m.group(1) for m in matches if m] if all(matches) else None


def _check_now(text: str, step: _Step) -> None:
    """A "We now have" line: groups of tied words, in increasing number, tied words in listed order."""
    numbers = {w: letter_number(letter_at(w, step.index)) for w in step.words}
    items: list[tuple[str, int, list[str]]] = []
    for part in text.split(" < "):
        match = _NOW_ITEM.fullmatch(part)
        group = _unquote(match.group(3), " ? ") if match and match.group(3) is not None else None
        words = [match.group(2)] if match and match.group(2) is not None else group
        if match is None or words is None or (group is not None and len(group) < 2):
            raise _Wrong('Each part should read (number) "word" or (number) ["word" ? "word"].', part)
        items.append((part, int(match.group(1)), words))
    _check_words([w for _, _, ws in items for w in ws], step.words, [part for part, _, ws in items for _ in ws])
    done: list[tuple[int, str]] = []  # (number, first word) of the parts before
    for part, number, words in items:
        first = words[0]
        for other in words[1:]:
            if (a := numbers[first]) != (b := numbers[other]):
                raise _Wrong(f'"{first}" ({a}) and "{other}" ({b}) do not tie, so they should not be grouped.', part)
        if number != numbers[first]:
            raise _Wrong(f'"{first}" has number {numbers[first]}, not {number}.', part)
        for before_number, before in done:
            if before_number == number:
                raise _Wrong(f'"{before}" and "{first}" tie at ({number}), so group them in brackets.', part)
            if before_number > number:
                raise _Wrong(f'"{first}" ({number}) should come before "{before}" ({before_number}).', part)
        tie = [w for w in step.words if numbers[w] == number]
        if set(words) == set(tie) and words != tie:
            wrong = next(i for i, w in enumerate(words) if w != tie[i])
            raise _Wrong(f'Tied words keep their listed order: "{tie[wrong]}" comes before "{words[wrong]}".', part)
        done.append((number, first))


_PREFIX = {
    "first": "The first letter: ",
    "subpart": "Now sort this subpart ",
    "now": "We now have: ",
    "hence": "Hence, we have ",
    "final": "So the answer is: ",
}


def _check_line(body: str, step: _Step) -> None:
    """Raise _Wrong if a line's text (after its label) is not a correct version of the step."""
    subpart = _SUBPART.fullmatch(body) if step.kind == "subpart" else None
    if not body.startswith(_PREFIX[step.kind]) or (step.kind == "subpart" and subpart is None):
        raise _Wrong(f"Step {step.label} should {_describe(step)}.", body[:60] or None)
    if not body.endswith("."):
        raise _Wrong("A step should end with a full stop.", body[-30:])
    text = body[len(_PREFIX[step.kind]) : -1]
    if step.kind == "first":
        _check_entries(text, step, "list")
    elif subpart is not None:
        bracket, position, entries = subpart.groups()
        if _unquote(bracket, " ? ") != list(step.words):
            raise _Wrong(f"The next subpart to sort is {_bracket(step.words)}.", f"[{bracket}]")
        if position != ordinal(step.index):
            raise _Wrong(
                f"These words share their first {step.index} letter{'s' if step.index > 1 else ''}, so compare "
                f"their {ordinal(step.index)} letters, not their {position} letters.",
                f"{position} letters",
            )
        _check_entries(entries, step, "subpart")
    elif step.kind == "now":
        _check_now(text, step)
    elif step.kind == "hence":
        listed = _unquote(text, " < ")
        if listed is None:
            raise _Wrong('A merged order should read "word" < "word" < "word".', text)
        _check_sorted(listed, step.words, text)
    else:
        _check_sorted(text.split(), step.words, text)


def _question_words(question: str) -> tuple[str, ...] | None:
    match = re.search(r"^List: (.*)$", question, re.MULTILINE)
    return tuple(match.group(1).split()) or None if match else None


class WordSortingTask(Task):
    """Sort 2-8 common words alphabetically, first letter first, ties broken letter by letter."""

    name: ClassVar[str] = "word_sorting"
    summary: ClassVar[str] = "Sort a list of English words alphabetically, breaking ties letter by letter (TriPosT)."
    tokenizer_level = "char"

    def __init__(
        self,
        *,
        min_words: int = 2,
        max_words: int = 4,
        unseen_min_words: int = 5,
        unseen_max_words: int = 6,
        tie_rate: float = 0.3,
        words: Sequence[str] = WORDS,
    ) -> None:
        sizes = [min_words, max_words, unseen_min_words, unseen_max_words]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
            raise TaskError(f"Word counts must be integers, not {sizes}.")
        if not 2 <= min_words <= max_words < unseen_min_words <= unseen_max_words <= 20:
            raise TaskError(
                "Word counts must satisfy 2 <= min_words <= max_words < unseen_min_words <= unseen_max_words <= 20, "
                f"not {min_words}, {max_words}, {unseen_min_words}, {unseen_max_words}."
            )
        if isinstance(tie_rate, bool) or not isinstance(tie_rate, int | float) or not 0 <= tie_rate <= 1:
            raise TaskError(f"tie_rate must be a number between 0 and 1, not {tie_rate!r}.")
        if len(set(words)) != len(words) or len(words) < unseen_max_words or not all(map(_WORD.fullmatch, words)):
            raise TaskError(f"words must be at least {unseen_max_words} distinct lowercase a-z words.")
        self.min_words, self.max_words = min_words, max_words
        self.unseen_min_words, self.unseen_max_words = unseen_min_words, unseen_max_words
        self.tie_rate = float(tie_rate)  # chance each next word shares a 1-3 letter prefix with one drawn
        self.words = tuple(words)

    def example(self, words: Sequence[str], split: Split = "train") -> Example:
        """The example for a given list of distinct lowercase words (any words, not only the built-in list)."""
        if len(words) < 2 or len(set(words)) != len(words) or not all(_WORD.fullmatch(w) for w in words):
            raise TaskError(f"A word-sorting list needs 2 or more distinct lowercase a-z words, not {list(words)}.")
        steps = _plan(tuple(words))
        return Example(
            question=QUESTION_HEAD + " ".join(words),
            rationale="\n".join(_render(step) for step in steps),
            answer=" ".join(sorted(words)),
            split=split,
            meta={"n_words": len(words), "depth": max(s.index for s in steps) + 1},  # letters compared, at most
        )

    def solve(self, question: str) -> Example | None:
        if not question.startswith(QUESTION_HEAD):
            return None
        try:
            return self.example(question.removeprefix(QUESTION_HEAD).split())
        except TaskError:
            return None

    def pose(self, question: str, n_generalized: int, n_harder: int, seed: int = 0) -> list[tuple[str, int]] | None:
        """Variants: as many new words; level h: h more words (ties by shared prefixes as usual)."""
        example = self.solve(question)
        if example is None:
            return None
        n_words = int(str(example.meta["n_words"]))
        rng = random.Random(f"{question}|{seed}")
        posed = [(self.example(self._draw(rng, n_words)).question, 0) for _ in range(n_generalized)]
        posed += [(self.example(self._draw(rng, n_words + level)).question, level) for level in range(1, n_harder + 1)]
        return posed

    def _draw(self, rng: random.Random, n_words: int) -> list[str]:
        words = [rng.choice(self.words)]
        while len(words) < n_words:
            if rng.random() < self.tie_rate:  # why: uniform draws rarely tie past the first letter
                prefix = rng.choice(words)[: rng.randint(1, 3)]
                near = [w for w in self.words if w.startswith(prefix) and w not in words]
                if near:
                    words.append(rng.choice(near))
                    continue
            word = rng.choice(self.words)
            if word not in words:
                words.append(word)
        rng.shuffle(words)
        return words

    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        if split not in SPLITS:
            raise TaskError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise TaskError(f"n must be a non-negative integer, not {n!r}.")
        rng = random.Random(f"{self.name}:{seed}:{split}")  # str seeds are stable across runs
        unseen = split == "unseen"
        low, high = (self.unseen_min_words, self.unseen_max_words) if unseen else (self.min_words, self.max_words)
        examples: list[Example] = []
        questions: set[str] = set()
        misses = 0
        while len(examples) < n:
            words = self._draw(rng, rng.randint(low, high))
            question = QUESTION_HEAD + " ".join(words)
            # train and seen share lengths: the question hash decides which one may use it, never both
            if question in questions or (not unseen and held_out(question) != (split == "seen")):
                misses += 1
                if misses > 5000:  # why: a small word list or size range may not hold n distinct lists
                    raise TaskError(f"Could only draw {len(examples)} distinct {split} lists of {n}; ask for fewer.")
                continue
            misses = 0
            questions.add(question)
            examples.append(self.example(words, split))
        return examples

    def verify(self, example: Example, rationale: str) -> Verdict:
        words = _question_words(example.question)
        if words is None or len(set(words)) != len(words):
            return Verdict(False, "(1)", 0, None, "The question has no list of distinct words to sort.")
        steps = _plan(words)
        labels = [s.label for s in steps]
        lines = rationale.rstrip().splitlines()
        for i, step in enumerate(steps):
            if i >= len(lines):
                return Verdict(False, step.label, i, None, f"The rationale stops before step {step.label}.")
            line = lines[i].strip()
            label = step_label(line)
            if label is None:
                reason = f"This line has no step label; it should be step {step.label}."
                return Verdict(False, step.label, i, line[:60] or None, reason)
            if label != step.label:
                if label in labels[i + 1 :]:
                    reason = f"Step {step.label} is missing: it should {_describe(step)}."
                    return Verdict(False, step.label, i, None, reason)
                return Verdict(False, step.label, i, label, f"This line should be step {step.label}, not {label}.")
            try:
                _check_line(line[len(label) :].strip(), step)
            except _Wrong as wrong:
                return Verdict(False, step.label, i, wrong.segment, wrong.reason)
        if len(lines) > len(steps):
            extra = lines[len(steps)].strip()
            reason = "Nothing should follow the final response."
            return Verdict(False, step_label(extra), len(steps), extra[:60] or None, reason)
        return Verdict(True)

    def grade(self, example: Example, output: str) -> bool:
        """Whether the output's final answer lists the example's words in the sorted order."""
        answer = self.extract_answer(output)
        return answer is not None and answer.split() == example.answer.split()
