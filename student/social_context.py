"""Social Learning's in-context prefix: the instruction and the kept examples that fit a token budget.

The prefix is the instruction, a blank line, then one shot per example (the task's prompt of its
input, its output, a blank line), as the model reads them before each question. `build` fills a
budget of tokens (counted as the model's tokenizer counts them, without the BOS token):

- the instruction first, left out only when it alone exceeds the budget;
- then the examples in the order `select` gives, each whole or not at all: one that no longer
  fits is left out and the next one tried. `aggregated` keeps the aggregator's order (the best
  voted first), `shortest` tries the fewest tokens first (so the most examples fit), `random`
  shuffles them with the student's seed. The shots appear in the prompt in that order.

`InContext` is what was chosen; the student saves it in its checkpoints, so a resumed student
puts the same prefix before its questions without asking a teacher again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ContextSelect = Literal["aggregated", "shortest", "random"]
Shot = tuple[str, str]  # (input, output)


def render(instruction: str, examples: Sequence[Shot], prompt: Callable[[str], str]) -> str:
    """The prefix text: the instruction (if any), then each example as a worked shot of the task."""
    shots = "".join(f"{prompt(i)}{o}\n\n" for i, o in examples)
    return f"{instruction}\n\n{shots}" if instruction else shots


@dataclass(frozen=True)
class InContext:
    """What goes before every question: the instruction and examples chosen, and what chose them."""

    instruction: str  # "" when there was none or it did not fit
    examples: tuple[Shot, ...]  # in prompt order
    tokens: int  # the prefix's tokens
    budget: int  # the tokens it could take
    offered: int  # kept examples it chose from
    requested: int  # student.social_context_tokens when it was built (0 = the model's context)
    select: str  # student.social_context_select when it was built

    def prefix(self, prompt: Callable[[str], str]) -> str:
        return render(self.instruction, self.examples, prompt)

    def to_json(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "examples": [list(example) for example in self.examples],
            "tokens": self.tokens,
            "budget": self.budget,
            "offered": self.offered,
            "requested": self.requested,
            "select": self.select,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InContext:
        return cls(
            str(data["instruction"]),
            tuple((str(i), str(o)) for i, o in data["examples"]),
            int(data["tokens"]),
            int(data["budget"]),
            int(data["offered"]),
            int(data["requested"]),
            str(data["select"]),
        )

    def describe(self) -> str:
        """One line for the run's summary."""
        instruction = "the instruction and " if self.instruction else ""
        return (
            f"{instruction}{len(self.examples)} of {self.offered} kept examples in the prompt "
            f"({self.select}), {self.tokens} of {self.budget} prefix tokens"
        )


def selection_order(
    examples: Sequence[Shot], select: ContextSelect, length: Callable[[Shot], int], seed: int
) -> list[int]:
    """The order in which examples are tried: their indices."""
    indices = list(range(len(examples)))
    if select == "shortest":
        return sorted(indices, key=lambda i: (length(examples[i]), i))
    if select == "random":
        random.Random(seed).shuffle(indices)
    return indices


def build(
    instruction: str,
    examples: Sequence[Shot],
    prompt: Callable[[str], str],
    count: Callable[[str], int],
    budget: int,
    select: ContextSelect,
    seed: int,
    requested: int = 0,
) -> InContext:
    """The instruction and the whole examples that fit `budget` tokens of `count`, tried in `select` order."""
    budget = max(budget, 0)
    kept_instruction = instruction if instruction and count(render(instruction, [], prompt)) <= budget else ""
    order = selection_order(examples, select, lambda shot: count(render("", [shot], prompt)), seed)
    chosen: list[Shot] = []
    tokens = count(render(kept_instruction, chosen, prompt))
    for index in order:
        trial = count(render(kept_instruction, [*chosen, examples[index]], prompt))
        if trial <= budget:
            chosen.append(examples[index])
            tokens = trial
    return InContext(kept_instruction, tuple(chosen), tokens, budget, len(examples), requested, select)


def shrink(context: InContext, prompt: Callable[[str], str], fits: Callable[[str], bool]) -> str:
    """The longest prefix of the context's lessons with which `fits` holds: examples dropped from the
    end, then the instruction (for a question longer than the budget was made for); "" if none does."""
    examples, instruction = list(context.examples), context.instruction
    while examples or instruction:
        text = render(instruction, examples, prompt)
        if fits(text):
            return text
        if examples:
            examples.pop()
        else:
            instruction = ""
    return ""
