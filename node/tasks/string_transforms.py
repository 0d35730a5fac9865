"""String transforms (GPT-3's word-scrambling tasks) with step-by-step gold rationales.

Three kinds, each a three-line rationale:

* ``insertion``: ``Q: Remove the inserted symbols from "h.o!u;s-e".``
  ``(1) The characters are h . o ! u ; s - e.`` / ``(2) Without the symbols, the letters are h, o, u, s, e.`` /
  ``(Final response) So the answer is house.``
* ``reversal``: ``Q: Reverse the letters of "house".``
  ``(1) The letters are h, o, u, s, e.`` / ``(2) Reversed, they are e, s, u, o, h.`` /
  ``(Final response) So the answer is esuoh.``
* ``shift``: ``Q: Shift each letter of "cab" forward by 2.``
  ``(1) The letters are c, a, b.`` / ``(2) Shifted forward by 2, they are e, c, d.`` /
  ``(Final response) So the answer is ecd.``

Words come from a built-in list of common English words: 3-6 letters for train and seen (split
by :func:`held_out` on the question), 7-10 letters for unseen. The insertion step lists characters
separated by spaces because a comma is one of the inserted symbols.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from node.tasks.base import (
    ANSWER_PATTERN,
    FINAL_LABEL,
    SPLITS,
    Example,
    Split,
    Task,
    TaskError,
    Verdict,
    final_response,
    held_out,
    step_label,
)

KINDS: tuple[str, ...] = ("insertion", "reversal", "shift")
INSTRUCTIONS: Mapping[str, str] = {
    "insertion": "To remove the inserted symbols, list every character, keep only the letters in order, and join them.",
    "reversal": "To reverse a word, list its letters, write them from the last to the first, and join them.",
    "shift": "To shift a word forward by k, replace each letter by the letter k places later, wrapping from z to a.",
}

_SHORT_WORDS = """
    ant bed bee box bus car cat cow cup dog egg fan fox hat hen jam key map mud owl pen pig red sun toy bag bat
    cap cot dot fig gum hut ink jar jet kit leg log mat net nut pan pot rat rug sea ski tap web yak zip arm
    ball bear bell bird boat book cake coat corn deer door drum duck farm fish foot frog goat hand kite lamp leaf
    lion milk moon nest nose rain ring rock rose salt sand seed ship shoe snow sock song soup star tree wind wolf
    baby girl hill lake road park fork bowl desk king cold warm fast slow blue pink gold home time word game
    apple bread chair cloud dance dream earth grape green happy heart honey horse house juice lemon light money
    mouse music night ocean paper party pizza plant queen river sheep smile snake storm table tiger train truck
    voice water zebra camel eagle bench brush clock crown fence glass glove jelly knife melon pearl piano plate
    sugar sweet towel wheel
    basket butter candle carrot castle circle cookie dinner doctor family flower forest friend garden guitar
    hammer island ladder letter mirror monkey orange parrot pencil pepper pillow planet purple rabbit rocket
    school silver spider summer turtle window winter yellow yogurt bottle button banana cheese coffee
"""
_LONG_WORDS = """
    morning evening kitchen chicken blanket picture rainbow monster balloon teacher brother penguin dolphin
    giraffe elephant dinosaur butterfly umbrella sandwich popcorn pancake cupcake biscuit chocolate strawberry
    pineapple blueberry mushroom broccoli cucumber computer keyboard notebook backpack bicycle airplane football
    baseball basketball homework birthday holiday vacation library hospital mountain volcano weather thunder
    lightning sunshine snowflake treasure princess captain soldier painter fireman postman neighbor grandma
    grandpa children daughter kangaroo squirrel hamster octopus lobster peacock ostrich leopard cheetah gorilla
    crocodile alligator scorpion mosquito ladybug hedgehog tortoise reindeer flamingo question problem example
    history science language sentence alphabet triangle rectangle diamond crystal cushion curtain ceiling
    doorbell fireplace bathroom bedroom hallway staircase elevator suitcase envelope scissors necklace bracelet
    sweater trousers slippers pajamas raincoat
"""
WORDS: tuple[str, ...] = tuple(_SHORT_WORDS.split() + _LONG_WORDS.split())  # ~220 of 3-6 letters, ~110 of 7-10
SYMBOLS = ".,;:!?-"
LENGTHS: Mapping[Split, tuple[int, int]] = {"train": (3, 6), "seen": (3, 6), "unseen": (7, 10)}

_QUESTIONS: Mapping[str, re.Pattern[str]] = {
    "insertion": re.compile(r'^Q: Remove the inserted symbols from "(.+)"\.$'),
    "reversal": re.compile(r'^Q: Reverse the letters of "([a-z]+)"\.$'),
    "shift": re.compile(r'^Q: Shift each letter of "([a-z]+)" forward by (\d+)\.$'),
}


def shift_letter(letter: str, k: int) -> str:
    """The letter k places later in the alphabet, wrapping from z to a."""
    return chr((ord(letter) - ord("a") + k) % 26 + ord("a"))


@dataclass(frozen=True)
class _Step:
    """One list step of a rationale: its label, fixed opening, expected items and how to explain a wrong item."""

    label: str
    opening: str  # e.g. "The letters are "
    items: Sequence[str]
    sep: str  # ", " for letters; " " for characters, as a comma may be one of them
    noun: str  # "letter" or "character"
    wrong: Callable[[int, str], str]  # (0-based item index, what was written) -> reason sentence

    @property
    def text(self) -> str:
        return f"{self.label} {self.opening}{self.sep.join(self.items)}."

    def check(self, lines: Sequence[str], index: int) -> Verdict | None:
        """None when line `index` is this step done right, else the verdict naming what is wrong."""

        def fail(segment: str | None, reason: str) -> Verdict:
            return Verdict(correct=False, step=self.label, line=index, segment=segment, reason=reason)

        if index >= len(lines):
            return fail(None, f"The rationale stops before step {self.label}.")
        line = lines[index].rstrip()
        if step_label(line) != self.label:
            return fail(
                line, f'This line should be step {self.label}, opening with "{self.label} {self.opening.strip()}".'
            )
        rest = line[len(self.label) :].strip()
        if not rest.startswith(self.opening.strip()):
            return fail(rest, f'Step {self.label} should open with "{self.opening.strip()}".')
        body = rest[len(self.opening.strip()) :].strip()
        body = body.removesuffix(".").strip()
        got = [item.strip() for item in body.split(self.sep.strip() or None)] if body else []
        expected = list(self.items)
        for j, item in enumerate(got):
            if j >= len(expected):
                return fail(item, f"There are only {len(expected)} {self.noun}s, but the list goes on.")
            if item != expected[j]:
                return fail(item, self.wrong(j, item))
        if len(got) < len(expected):
            return fail(body, f"The list stops after {len(got)} {self.noun}s; there are {len(expected)}.")
        return None


class StringTransformTask(Task):
    """Undo an inserted-symbol scramble, reverse a word, or Caesar-shift it, showing each step."""

    name: ClassVar[str] = "string_transforms"
    summary: ClassVar[str] = "Remove inserted symbols, reverse a word or shift its letters, step by step."

    def __init__(self, *, kinds: Sequence[str] = KINDS, max_shift: int = 3, symbols: str = SYMBOLS) -> None:
        if isinstance(kinds, str) or not kinds:
            raise TaskError(f"kinds must be a non-empty list of task kinds from {', '.join(KINDS)}.")
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown:
            raise TaskError(f'The kind "{unknown[0]}" is not one of {", ".join(KINDS)}.')
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 1 <= max_shift <= 25:
            raise TaskError(f"max_shift must be a whole number between 1 and 25 (got {max_shift!r}).")
        bad = [c for c in symbols if c.isalnum() or c.isspace() or c == '"']
        if not symbols or bad:
            raise TaskError("symbols must be non-empty and hold no letters, digits, spaces or double quotes.")
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(kinds))  # ordered, without repeats
        self.max_shift = max_shift
        self.symbols = symbols

    @property
    def instructions(self) -> dict[str, str]:
        """One gold instruction sentence per kind this task asks (for instruction lessons)."""
        return {kind: INSTRUCTIONS[kind] for kind in self.kinds}

    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """n seeded examples; train and seen are split by held_out(question), unseen uses longer words."""
        if split not in SPLITS:
            raise TaskError(f'The split "{split}" is not one of "train", "seen", "unseen".')
        if n < 0:
            raise TaskError(f"The number of examples must not be negative (got {n}).")
        low, high = LENGTHS[split]
        words = [word for word in WORDS if low <= len(word) <= high]
        rng = random.Random(f"string_transforms:{seed}:{split}")
        examples: list[Example] = []
        attempts = 0
        while len(examples) < n:
            attempts += 1
            if attempts > 1000 * (n + 10):  # seen keeps about 1 question in 10; this is only a safety net
                raise TaskError(f"Could not make {n} {split} examples; the word list is too small.")
            kind, word = rng.choice(self.kinds), rng.choice(words)
            if kind == "insertion":
                question = self._insertion_question(word, "".join(rng.choice(self.symbols) for _ in word[1:]))
            elif kind == "reversal":
                question = f'Q: Reverse the letters of "{word}".'
            else:
                question = f'Q: Shift each letter of "{word}" forward by {rng.randint(1, self.max_shift)}.'
            if split != "unseen" and held_out(question) != (split == "seen"):
                continue
            steps = self._steps(question)
            assert steps is not None  # the question was made above, so it parses
            rationale = "\n".join([step.text for step in steps[0]] + [final_response(steps[1])])
            examples.append(
                Example(question, rationale, steps[1], split, {"kind": kind, "word": word, "length": len(word)})
            )
        return examples

    @staticmethod
    def _insertion_question(word: str, symbols: str) -> str:
        scrambled = word[0] + "".join(s + c for s, c in zip(symbols, word[1:], strict=True))
        return f'Q: Remove the inserted symbols from "{scrambled}".'

    @staticmethod
    def _steps(question: str) -> tuple[list[_Step], str] | None:
        """The gold list steps and answer for a question, or None when it is not one of this task's questions."""
        for kind, pattern in _QUESTIONS.items():
            match = pattern.match(question)
            if match is not None:
                return _build_steps(kind, match)
        return None

    def verify(self, example: Example, rationale: str) -> Verdict:
        """Walk the two list steps and the final response; the first wrong item or line wins."""
        parsed = self._steps(example.question)
        if parsed is None:
            return Verdict(correct=False, reason="The question is not one this task asks, so it cannot be checked.")
        steps, answer = parsed
        lines = rationale.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()  # trailing blank lines are not steps
        for index, step in enumerate(steps):
            verdict = step.check(lines, index)
            if verdict is not None:
                return verdict
        index = len(steps)
        if index >= len(lines):
            return Verdict(
                correct=False, step=FINAL_LABEL, line=index, reason="The rationale stops before the final response."
            )
        line = lines[index]
        if step_label(line) != FINAL_LABEL:
            return Verdict(
                correct=False,
                step=FINAL_LABEL,
                line=index,
                segment=line,
                reason=f'This line should be the final response, "{FINAL_LABEL} So the answer is ...".',
            )
        match = ANSWER_PATTERN.search(line)
        got = match.group(1).strip() if match else None
        if got != answer:
            return Verdict(
                correct=False,
                step=FINAL_LABEL,
                line=index,
                segment=got or line,
                reason=f'Joining the letters gives "{answer}", not "{got}".'
                if got is not None
                else 'The final response does not say "So the answer is ...".',
            )
        if len(lines) > index + 1:
            extra = lines[index + 1]
            return Verdict(
                correct=False,
                step=step_label(extra),
                line=index + 1,
                segment=extra,
                reason="The rationale goes on after the final response.",
            )
        return Verdict(correct=True)


def _build_steps(kind: str, match: re.Match[str]) -> tuple[list[_Step], str]:
    """The list steps and answer of one parsed question (the reasons quote the right item)."""
    if kind == "insertion":
        scrambled = match.group(1)
        chars = list(scrambled)
        letters = [c for c in chars if c in string.ascii_lowercase]
        return [
            _Step(
                label="(1)",
                opening="The characters are ",
                items=chars,
                sep=" ",
                noun="character",
                wrong=lambda j, got: f'Character {j + 1} of "{scrambled}" is "{chars[j]}", not "{got}".',
            ),
            _Step(
                label="(2)",
                opening="Without the symbols, the letters are ",
                items=letters,
                sep=", ",
                noun="letter",
                wrong=lambda j, got: f'Without the symbols, letter {j + 1} is "{letters[j]}", not "{got}".',
            ),
        ], "".join(letters)
    word = match.group(1)
    first = _Step(
        label="(1)",
        opening="The letters are ",
        items=list(word),
        sep=", ",
        noun="letter",
        wrong=lambda j, got: f'Letter {j + 1} of "{word}" is "{word[j]}", not "{got}".',
    )
    if kind == "reversal":
        back = word[::-1]
        reversed_letters = _Step(
            label="(2)",
            opening="Reversed, they are ",
            items=list(back),
            sep=", ",
            noun="letter",
            wrong=lambda j, got: f'Letter {j + 1} of the reversed word is "{back[j]}", not "{got}".',
        )
        return [first, reversed_letters], back
    k = int(match.group(2))
    shifted = "".join(shift_letter(c, k) for c in word)
    shifted_letters = _Step(
        label="(2)",
        opening=f"Shifted forward by {k}, they are ",
        items=list(shifted),
        sep=", ",
        noun="letter",
        wrong=lambda j, got: f'Shifting "{word[j]}" forward by {k} gives "{shifted[j]}", not "{got}".',
    )
    return [first, shifted_letters], shifted
