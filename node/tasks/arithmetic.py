"""Multistep arithmetic in TriPosT's scripted step format (Yu et al. 2023).

A question such as ``Q: ((7 - -1 + -1) - (-7 + 7 * 3)) =`` combines flat sub-expressions ("leaves") of
``length`` single-digit operands into a tree of ``depth`` levels. The gold rationale names the leaves
A, B, …, calculates each one (first bracketing it by precedence, then one operation per ``=`` link),
then does the same for the final equation in the letters::

    (1) This equation can be written as "(A - B)", where A = (7 - -1 + -1) and B = (-7 + 7 * 3).
    (2) Let's calculate A = (7 - -1 + -1) = ((7 - -1) + -1) = (8 + -1) = 7.
    (3) Let's calculate B = (-7 + 7 * 3) = (-7 + (7 * 3)) = (-7 + 21) = 14.
    (4) Then, the final equation is (A - B) = (7 - 14) = -7.
    (Final response) So the answer is -7.

A depth-1 question is a single leaf: ``(1) Let's calculate (2 + 3 * 4) = (2 + (3 * 4)) = (2 + 12) = 14.``
The verifier rebuilds this script from the question and reports the first line that departs from it,
with a sentence naming the mistake (a wrong partition, brackets against precedence, a calculation
error, a wrongly carried value, a missing step …), as TriPosT's scripted feedback does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from node.tasks.arith_expr import (
    HOLE,
    OPERATORS,
    Bin,
    Expr,
    ParseError,
    bindings,
    count_ops,
    evaluate,
    parse,
    ready,
    reductions,
    render,
    replace_ready,
    skeleton,
    substitute,
)
from node.tasks.base import (
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

_LETTERS = "ABCD"
_DEPTH_OF_LEAVES = {1: 1, 2: 2, 4: 3}
_QUESTION = re.compile(r"Q:\s*(.+?)\s*=")
_LEAF = re.compile(r"\([^()]*\)")  # a bracket pair with no brackets inside
_PARTITION = re.compile(r'This equation can be written as "(?P<pattern>[^"]*)",\s*where\s+(?P<parts>.+?)\.?')
_ANSWER = re.compile(r"So the answer is (-?\d+)\.?")
_LEAF_OPENING = "Let's calculate"
_FINAL_OPENING = "Then, the final equation is"

Problem = tuple[str | None, str]  # (segment, reason) of a wrong line


@dataclass(frozen=True)
class _Step:
    """One calculation line of the gold script: its opening words and its "="-separated parts."""

    label: str
    opening: str
    parts: tuple[str, ...]
    roles: tuple[str, ...]  # per part: "letter", "leaf", "pattern", "values", "brackets" or "reduce"

    @property
    def line(self) -> str:
        return f"{self.label} {self.opening} {' = '.join(self.parts)}."


@dataclass(frozen=True)
class _Solution:
    """The gold script of one question, with what the verifier compares against."""

    pattern: Expr  # the question in letters, Var("A") at depth 1
    leaves: tuple[str, ...]
    values: dict[str, int]
    steps: tuple[_Step, ...]
    answer: int

    @property
    def depth(self) -> int:
        return _DEPTH_OF_LEAVES[len(self.leaves)]

    @property
    def partition(self) -> str:
        parts = [f"{letter} = {leaf}" for letter, leaf in zip(_LETTERS, self.leaves, strict=False)]
        return f'(1) This equation can be written as "{render(self.pattern)}", where {_and(parts)}.'

    def lines(self) -> list[str]:
        head = [self.partition] if self.depth > 1 else []
        return [*head, *(step.line for step in self.steps), final_response(str(self.answer))]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _same(written: str, gold: str) -> bool:
    """Equal up to whitespace: "7 - -1" and "7--1" are the same text to the verifier."""
    return re.sub(r"\s+", "", written) == re.sub(r"\s+", "", gold)


def _solve(question: str) -> _Solution | None:
    """The gold script of a question, or None if it is not one this task can pose."""
    match = _QUESTION.fullmatch(question.strip())
    leaves = tuple(_LEAF.findall(match[1])) if match else ()
    if match is None or len(leaves) not in _DEPTH_OF_LEAVES or any(re.search(r"[A-Z?]", leaf) for leaf in leaves):
        return None
    letters = iter(_LETTERS)
    try:
        parse(match[1])  # the parser's caps on the whole question keep every number printable
        pattern = parse(_LEAF.sub(lambda _: next(letters), match[1]))
        trees = [parse(leaf) for leaf in leaves]
    except ParseError:
        return None
    if re.search(r"\d", render(pattern)) or not all(isinstance(tree, Bin) for tree in trees):
        return None  # numbers outside the leaves, or a leaf without an operation
    values = {letter: evaluate(tree, {}) for letter, tree in zip(_LETTERS, trees, strict=False)}
    nested = len(leaves) > 1
    steps = []
    for index, (letter, leaf, tree) in enumerate(zip(_LETTERS, leaves, trees, strict=False)):
        parts, roles = ([letter, leaf], ["letter", "leaf"]) if nested else ([leaf], ["leaf"])
        if not _same(render(tree), leaf):  # a leaf of one operation is already bracketed
            parts.append(render(tree))
            roles.append("brackets")
        parts += [render(form) for form in reductions(tree)[1:]]
        roles += ["reduce"] * (len(parts) - len(roles))
        steps.append(_Step(f"({index + 1 + nested})", _LEAF_OPENING, tuple(parts), tuple(roles)))
    if nested:
        chain = [render(form) for form in reductions(substitute(pattern, values))]
        roles = ["pattern", "values"] + ["reduce"] * (len(chain) - 1)
        label = f"({len(leaves) + 2})"
        steps.append(_Step(label, _FINAL_OPENING, (render(pattern), *chain), tuple(roles)))
    return _Solution(pattern, leaves, values, tuple(steps), evaluate(pattern, values))


def _random_question(rng: random.Random, length: int, depth: int) -> str:
    """A question of 2**(depth-1) leaves of `length` operands each, combined pairwise."""
    exprs = []
    for _ in range(2 ** (depth - 1)):
        tokens = [str(rng.randint(-9, 9))]
        for _ in range(length - 1):
            tokens += [rng.choice(OPERATORS), str(rng.randint(-9, 9))]
        exprs.append(f"({' '.join(tokens)})")
    while len(exprs) > 1:
        exprs = [f"({a} {rng.choice(OPERATORS)} {b})" for a, b in zip(exprs[::2], exprs[1::2], strict=True)]
    return f"Q: {exprs[0]} ="


def _int_set(name: str, values: Iterable[int], low: int, high: int) -> frozenset[int]:
    """A validated option: a non-empty set of integers from low to high."""
    try:
        chosen = frozenset(values)
    except TypeError:
        raise TaskError(f"The option {name} must be a collection of integers.") from None
    if not chosen:
        raise TaskError(f"The option {name} must not be empty.")
    for value in chosen:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise TaskError(f"The option {name} must hold integers from {low} to {high}, not {value!r}.")
    return chosen


class ArithmeticTask(Task):
    """Multistep arithmetic: in-distribution (train/seen) problems are shorter and shallower than unseen ones."""

    name: ClassVar[str] = "arithmetic"
    summary: ClassVar[str] = (
        "Multistep arithmetic on single-digit integers in TriPosT's scripted format: "
        "split into sub-expressions, then calculate one operation per step."
    )
    tokenizer_level = "char"
    options = ("lengths", "depths", "unseen_lengths", "unseen_depths")

    def __init__(
        self,
        *,
        lengths: Iterable[int] = (2, 3),
        depths: Iterable[int] = (1, 2),
        unseen_lengths: Iterable[int] = (3, 4),
        unseen_depths: Iterable[int] = (2, 3),
    ) -> None:
        self.lengths = _int_set("lengths", lengths, 2, 8)
        self.depths = _int_set("depths", depths, 1, 3)
        self.unseen_lengths = _int_set("unseen_lengths", unseen_lengths, 2, 8)
        self.unseen_depths = _int_set("unseen_depths", unseen_depths, 1, 3)
        self._seen_shapes = [(n, d) for n in sorted(self.lengths) for d in sorted(self.depths)]
        # Out of distribution means a length or a depth never seen in training.
        self._unseen_shapes = [
            (n, d)
            for n in sorted(self.unseen_lengths)
            for d in sorted(self.unseen_depths)
            if (n, d) not in self._seen_shapes
        ]
        if not self._unseen_shapes:
            raise TaskError(
                "The unseen split must differ from the seen one in length or depth, but every pair is seen."
            )

    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        if split not in SPLITS:
            raise TaskError(f"Unknown split {split!r}: choose train, seen or unseen.")
        if n < 0:
            raise TaskError("The number of examples must not be negative.")
        rng = random.Random(f"{self.name}:{seed}:{split}")  # str seeds hash the same in every process
        shapes = self._unseen_shapes if split == "unseen" else self._seen_shapes
        examples: list[Example] = []
        questions: set[str] = set()
        for _ in range(100 * n + 1000):
            if len(examples) == n:
                break
            question = _random_question(rng, *rng.choice(shapes))
            # train and seen share one distribution; the question's hash decides which one holds it.
            if question in questions or (split != "unseen" and held_out(question) != (split == "seen")):
                continue
            questions.add(question)
            examples.append(self.example(question, split))
        if len(examples) < n:
            raise TaskError(f"Only {len(examples)} distinct {split} questions were found; the options allow too few.")
        return examples

    def example(self, question: str, split: Split = "train") -> Example:
        """The example of a question (e.g. "Q: ((1 + 2) * (3 - 4)) ="), with its gold rationale."""
        solution = _solve(question)
        if solution is None:
            raise TaskError(f"{question!r} is not a multistep arithmetic question this task can pose.")
        length = sum(part in OPERATORS for part in solution.leaves[0].split()) + 1
        meta = {"length": length, "depth": solution.depth}
        return Example(question, "\n".join(solution.lines()), str(solution.answer), split, meta)

    def solve(self, question: str) -> Example | None:
        try:
            return self.example(question.strip())
        except TaskError:
            return None

    def pose(self, question: str, n_generalized: int, n_harder: int, seed: int = 0) -> list[tuple[str, int]] | None:
        """Variants: same leaf length and depth, new numbers; level h: h more operands per leaf
        (at most 8), and one level deeper from level 2 on (at most depth 3)."""
        example = self.solve(question)
        if example is None:
            return None
        length, depth = int(str(example.meta["length"])), int(str(example.meta["depth"]))
        rng = random.Random(f"{question}|{seed}")
        posed = [(_random_question(rng, length, depth), 0) for _ in range(n_generalized)]
        for level in range(1, n_harder + 1):
            harder = (min(length + level, 8), min(depth + level // 2, 3))
            posed.append((_random_question(rng, *harder), level))
        return posed

    def verify(self, example: Example, rationale: str) -> Verdict:
        solution = _solve(example.question)
        if solution is None:
            return Verdict(False, reason="The question is not a multistep arithmetic problem this task can check.")
        lines = rationale.splitlines()
        for index, gold in enumerate(solution.lines()):
            label = step_label(gold) or ""
            if index >= len(lines):
                missing = "The final response is missing." if label == FINAL_LABEL else f"Step {label} is missing."
                return Verdict(False, label, index, None, missing)
            line = lines[index].strip()
            written = step_label(line)
            if written != label:
                return Verdict(False, label, index, line, _label_reason(label, written))
            body = line[len(label) :].strip()
            if label == FINAL_LABEL:
                problem = _check_answer(solution, body)
            elif index == 0 and solution.depth > 1:
                problem = _check_partition(solution, body)
            else:
                problem = _check_step(solution, solution.steps[index - (solution.depth > 1)], body)
            if problem is not None:
                return Verdict(False, label, index, *problem)
        return Verdict(True)


def _label_reason(label: str, written: str | None) -> str:
    what = "the final response" if label == FINAL_LABEL else f"step {label}"
    if written is None:
        return f"This line should be {what}, but it has no step label."
    if written == FINAL_LABEL:
        return f"Step {label} is missing before the final response."
    return f"This line should be {what}, but it is labelled {written}."


def _check_partition(solution: _Solution, body: str) -> Problem | None:
    """Step (1): the equation in letters, and each letter's sub-expression."""
    pattern, letters = render(solution.pattern), _and(list(_LETTERS[: len(solution.leaves)]))
    match = _PARTITION.fullmatch(body)
    if match is None:
        return body, f'This step should write the equation as "{pattern}" and name its parts {letters}.'
    if not _same(match["pattern"], pattern):
        return match["pattern"], f"The partition is wrong: the equation should be written as {pattern}."
    parts = re.split(r",\s*|\s+and\s+", match["parts"])
    for index, (letter, leaf) in enumerate(zip(_LETTERS, solution.leaves, strict=False)):
        if index >= len(parts):
            return match["parts"], f"The partition is wrong: {letter} = {leaf} is missing."
        part = re.fullmatch(r"([A-Z])\s*=\s*(.+)", parts[index].strip())
        if part is None or part[1] != letter or not _same(part[2], leaf):
            return parts[index], f"The partition is wrong: {letter} should be {leaf}."
    if len(parts) > len(solution.leaves):
        return parts[len(solution.leaves)], f"The partition is wrong: the equation has only the parts {letters}."
    return None


def _check_answer(solution: _Solution, body: str) -> Problem | None:
    match, result = _ANSWER.fullmatch(body), f"{solution.answer}, the result of step {solution.steps[-1].label}"
    if match is None:
        return body, f'The final response should state "So the answer is" and then {result}.'
    return None if int(match[1]) == solution.answer else (body, f"The final answer should be {result}.")


def _check_step(solution: _Solution, step: _Step, body: str) -> Problem | None:
    """A calculation line: its opening, then every "=" link against the gold script."""
    match = re.fullmatch(re.escape(step.opening) + r"\s+(.+?)\.?", body)
    if match is None:
        return body, f'This step should read "{step.opening} {step.parts[0]} = {step.parts[1]} = ...".'
    written = [part.strip() for part in match[1].split("=")]
    for j, gold in enumerate(step.parts):
        if j == len(written):
            return written[-1], f"The calculation stops before its result: {step.parts[j - 1]} should become {gold}."
        if not _same(written[j], gold):
            # The failing link, or the part itself at the start; a wrong letter is shown with its expression.
            link = " = ".join(written[j - 1 : j + 1] if j else written[: 1 + (step.roles[0] == "letter")])
            return link, _link_reason(solution, step, j, written[j])
    if len(written) > len(step.parts):
        extra = " = ".join(written[len(step.parts) - 1 : len(step.parts) + 1])
        return extra, f"The result {step.parts[-1]} is already reached, so the calculation should end there."
    return None


def _link_reason(solution: _Solution, step: _Step, j: int, written: str) -> str:
    """Why the j-th part of a step is wrong, given that every part before it is right."""
    role, gold, before = step.roles[j], step.parts[j], step.parts[j - 1] if j else ""
    if role == "letter":
        return f"This step should calculate {gold} = {step.parts[1]} next."
    if role == "leaf":  # the written text is quoted in the segment, so reasons never repeat it
        return f"{before} is {gold} according to step (1)." if j else f"The expression to calculate is {gold}."
    if role == "pattern":
        return f"The final equation should be {gold}, as written in step (1)."
    try:
        tree = parse(written)
    except ParseError:
        return f"This part is not a well-formed expression: {before} should become {gold}."
    if role == "values":
        for letter, value in bindings(solution.pattern, tree) or []:
            if value != solution.values[letter]:
                right, source = solution.values[letter], f"({_LETTERS.index(letter) + 2})"
                return f"A wrong value is carried over: {letter} is {right} from step {source}, not {value}."
        return f"Putting the values of the letters into {before} should give {gold}."
    previous = parse(before)
    if role == "brackets":
        return _brackets_reason(previous, tree, before, written, gold)
    return _reduce_reason(previous, tree, before, gold)


def _brackets_reason(previous: Expr, tree: Expr, before: str, written: str, gold: str) -> str:
    """A leaf bracketed wrongly: by precedence, `*` goes first, then left to right."""
    if count_ops(tree) < count_ops(previous):
        return f"Every operation should be bracketed before calculating, so {before} should first become {gold}."
    if re.sub(r"[\s()]", "", written) != re.sub(r"[\s()]", "", before):
        return f"Brackets must not change the numbers or operators, so {before} should become {gold}."
    if tree == previous:
        return f"Every operation should get its own brackets, so {before} should become {gold}."
    if _multiplies_a_sum(tree):
        return f"Multiplication should be done before addition and subtraction, so {before} should become {gold}."
    return f"Operations of equal precedence should be done from left to right, so {before} should become {gold}."


def _multiplies_a_sum(tree: Expr) -> bool:
    if not isinstance(tree, Bin):
        return False
    if tree.op == "*" and any(isinstance(side, Bin) and side.op != "*" for side in (tree.left, tree.right)):
        return True
    return _multiplies_a_sum(tree.left) or _multiplies_a_sum(tree.right)


def _reduce_reason(previous: Expr, tree: Expr, before: str, gold: str) -> str:
    """A reduction link gone wrong: a wrong value, a copying slip, several operations, or the wrong one."""
    operation = ready(previous)
    target = parse(gold)
    if operation is None:  # unreachable for gold scripts: a number is never reduced further
        return f"The expression should be {gold}."
    found = bindings(replace_ready(previous, lambda _: HOLE) or HOLE, tree)
    if found is not None and found[0][1] != evaluate(operation, {}):
        return f"There is a calculation error, since {render(operation)} should be {evaluate(operation, {})}."
    if found is not None:  # the right value, written with extra brackets
        return f"The expression should be written as {gold}."
    if skeleton(tree) == skeleton(target):
        return f"The other numbers should be copied unchanged, so {before} should become {gold}."
    if count_ops(tree) < count_ops(target):
        return f"Only one operation should be calculated at a time, so {before} should first become {gold}."
    if count_ops(tree) == count_ops(target):
        return f"The leftmost innermost operation {render(operation)} comes first, so {before} should become {gold}."
    return f"Calculating {render(operation)} turns {before} into {gold}."
