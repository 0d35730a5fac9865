"""Expressions of the arithmetic task: a recursive-descent parser, canonical rendering, one-step reduction.

Operands are integers (negatives written ``-7``, so ``7 - -1``) or capital letters standing for
sub-expressions; ``*`` binds tighter than ``+`` and ``-``, and equal precedence groups left to right.
There is no eval(): the verifier reads untrusted model output, so the parser also caps what it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

OPERATORS = ("+", "-", "*")
MAX_DIGITS = 40  # a gold number has at most 31 digits (length 8, depth 3); caps keep str(int) and recursion safe
MAX_OPERANDS = 64
MAX_NESTING = 32
_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class Var:
    name: str  # "A" … "Z", or "?" for a hole (see bindings)


@dataclass(frozen=True)
class Bin:
    op: str
    left: Expr
    right: Expr


Expr = Num | Var | Bin
HOLE = Var("?")


class ParseError(ValueError):
    """Text that is not an expression; the message says why."""


class _Parser:
    """expr := term (("+" | "-") term)* ; term := atom ("*" atom)* ; atom := number | letter | "(" expr ")"."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.operands, self.nesting = text, 0, 0, 0

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expr(self) -> Expr:
        tree = self.term()
        while (op := self.peek()) in ("+", "-"):
            self.pos += 1
            tree = Bin(op, tree, self.term())
        return tree

    def term(self) -> Expr:
        tree = self.atom()
        while self.peek() == "*":
            self.pos += 1
            tree = Bin("*", tree, self.atom())
        return tree

    def atom(self) -> Expr:
        char = self.peek()
        if char == "(":
            self.nesting += 1
            if self.nesting > MAX_NESTING:
                raise ParseError("too deeply nested")
            self.pos += 1
            inner = self.expr()
            if self.peek() != ")":
                raise ParseError(f"expected ')' at position {self.pos}")
            self.pos += 1
            self.nesting -= 1
            return inner
        self.operands += 1
        if self.operands > MAX_OPERANDS:
            raise ParseError("too many operands")
        if "A" <= char <= "Z" or char == "?":
            self.pos += 1
            return Var(char)
        start = self.pos + (char == "-")  # a minus in operand position is a sign
        end = start
        while end < len(self.text) and self.text[end] in _DIGITS:
            end += 1
        if end == start or end - start > MAX_DIGITS:
            raise ParseError(f"expected a number at position {self.pos}")
        value = int(self.text[start:end])
        self.pos = end
        return Num(-value if char == "-" else value)


def parse(text: str) -> Expr:
    """The expression tree of a text, by precedence; raises ParseError for anything else."""
    parser = _Parser(text)
    tree = parser.expr()
    if parser.peek():
        raise ParseError(f"unexpected {parser.peek()!r} at position {parser.pos}")
    return tree


def render(expr: Expr) -> str:
    """The fully bracketed text of an expression: one pair of brackets per operation."""
    if isinstance(expr, Num):
        return str(expr.value)
    if isinstance(expr, Var):
        return expr.name
    return f"({render(expr.left)} {expr.op} {render(expr.right)})"


def apply(op: str, left: int, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def evaluate(expr: Expr, values: Mapping[str, int]) -> int:
    """The value of an expression, letters taken from values."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Var):
        return values[expr.name]
    return apply(expr.op, evaluate(expr.left, values), evaluate(expr.right, values))


def substitute(expr: Expr, values: Mapping[str, int]) -> Expr:
    """The expression with each letter replaced by its value."""
    if isinstance(expr, Var):
        return Num(values[expr.name])
    if isinstance(expr, Bin):
        return Bin(expr.op, substitute(expr.left, values), substitute(expr.right, values))
    return expr


def count_ops(expr: Expr) -> int:
    return 1 + count_ops(expr.left) + count_ops(expr.right) if isinstance(expr, Bin) else 0


def ready(expr: Expr) -> Bin | None:
    """The operation to calculate next: the leftmost one whose operands are both numbers."""
    if not isinstance(expr, Bin):
        return None
    if isinstance(expr.left, Num) and isinstance(expr.right, Num):
        return expr
    return ready(expr.left) or ready(expr.right)


def replace_ready(expr: Expr, make: Callable[[Bin], Expr]) -> Expr | None:
    """The expression with its next operation replaced by make(operation), or None if there is none."""
    if not isinstance(expr, Bin):
        return None
    if isinstance(expr.left, Num) and isinstance(expr.right, Num):
        return make(expr)
    if (left := replace_ready(expr.left, make)) is not None:
        return Bin(expr.op, left, expr.right)
    right = replace_ready(expr.right, make)
    return None if right is None else Bin(expr.op, expr.left, right)


def reductions(expr: Expr) -> list[Expr]:
    """The expression, then each next form with one operation calculated, down to a number."""
    chain = [expr]
    while (step := replace_ready(chain[-1], lambda op: Num(evaluate(op, {})))) is not None:
        chain.append(step)
    return chain


def skeleton(expr: Expr) -> str:
    """The rendered expression with every number blanked: same skeleton, same shape."""
    return _NUMBER.sub("#", render(expr))


def bindings(template: Expr, expr: Expr) -> list[tuple[str, int]] | None:
    """The numbers an expression puts where the template has letters (or the hole), or None if it does not fit."""
    names: list[str] = []
    pattern = ""
    for char in render(template):
        if "A" <= char <= "Z" or char == "?":
            names.append(char)
            pattern += r"(-?\d+)"
        else:
            pattern += re.escape(char)
    match = re.fullmatch(pattern, render(expr))
    return None if match is None else [(name, int(value)) for name, value in zip(names, match.groups(), strict=True)]
