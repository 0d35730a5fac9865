"""A user's own data as a task: one JSON object per line with ``input`` and ``output``.

File format (UTF-8, one object per line, blank lines skipped)::

    {"input": "2 + 2", "output": "4"}
    {"input": "capital of France", "output": "Paris", "split": "unseen"}

``split`` is optional and one of ``train``, ``seen``, ``unseen``; a line without it goes to
``seen`` when :func:`held_out` picks its input, else to ``train``. Other keys are ignored. The
output is stripped of surrounding whitespace and must be one line. The question is ``Q: <input>``
and the gold rationale is the final response alone, ``(Final response) So the answer is <output>.``;
there are no intermediate steps to check, so the verifier only checks the final answer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
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


def _rationale(output: str) -> str:
    return final_response(output)


class JsonlTask(Task):
    """Examples read from a JSONL file; every line is checked when the task is built."""

    name: ClassVar[str] = "jsonl"
    summary: ClassVar[str] = "Your own input/output pairs from a JSONL file, graded by exact match."

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._examples: dict[Split, list[Example]] = {split: [] for split in SPLITS}
        for example in self._load():
            self._examples[example.split].append(example)

    def _error(self, lineno: int, what: str) -> TaskError:
        return TaskError(f"{self.path}, line {lineno}: {what}")

    def _load(self) -> list[Example]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise TaskError(f"{self.path}: no such file.") from None
        except OSError as exc:
            raise TaskError(f"{self.path}: cannot be read ({exc.strerror or exc}).") from None
        examples = [
            self._parse(lineno, raw)
            for lineno, raw in enumerate(data.split(b"\n"), start=1)
            if raw.strip()  # blank lines (and a trailing newline) are not examples
        ]
        if not examples:
            raise TaskError(f"{self.path}: the file has no examples (every line is blank).")
        return examples

    def _parse(self, lineno: int, raw: bytes) -> Example:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(lineno, "the line is not UTF-8 text.") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(lineno, f"the line is not valid JSON ({exc.msg} at column {exc.colno}).") from None
        if not isinstance(record, dict):
            raise self._error(lineno, f"the line is a JSON {type(record).__name__}, not an object.")
        fields: dict[str, str] = {}
        for key in ("input", "output"):
            if key not in record:
                raise self._error(lineno, f'the object has no "{key}" field.')
            value = record[key]
            if not isinstance(value, str):
                raise self._error(lineno, f'the "{key}" field is not a string.')
            if not value.strip():
                raise self._error(lineno, f'the "{key}" field is empty.')
            fields[key] = value
        output = fields["output"].strip()  # grading extracts a stripped answer, so store it stripped
        if len(output.splitlines()) > 1:  # the rationale's final line must hold all of it
            raise self._error(lineno, 'the "output" field spans several lines; it must be one line.')
        named = record.get("split")
        split: Split
        if named is None:
            split = "seen" if held_out(fields["input"]) else "train"
        else:
            matches = [known for known in SPLITS if known == named]  # typed as Split, unlike `named`
            if not matches:
                raise self._error(lineno, f'the split {json.dumps(named)} is not one of "train", "seen", "unseen".')
            split = matches[0]
        return Example(
            question=f"Q: {fields['input']}",
            rationale=_rationale(output),
            answer=output,
            split=split,
            meta={"line": lineno},
        )

    def count(self, split: Split) -> int:
        """How many examples the file has for a split."""
        return len(self._examples[split])

    def draw(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """A seeded sample of n of the split's examples; all of them (shuffled) when there are fewer."""
        if split not in SPLITS:
            raise TaskError(f'The split "{split}" is not one of "train", "seen", "unseen".')
        if n < 0:
            raise TaskError(f"The number of examples must not be negative (got {n}).")
        pool = self._examples[split]
        rng = random.Random(f"jsonl:{seed}:{split}")
        return rng.sample(pool, min(n, len(pool)))

    def verify(self, example: Example, rationale: str) -> Verdict:
        """Correct iff the last final-response line gives the example's answer; intermediate lines are free."""
        lines = rationale.splitlines()
        finals = [i for i, line in enumerate(lines) if step_label(line) == FINAL_LABEL]
        if not finals:
            return Verdict(
                correct=False,
                step=FINAL_LABEL,
                line=len(lines),
                reason=f'The rationale has no line opening with "{FINAL_LABEL}".',
            )
        index = finals[-1]
        line = lines[index]
        match = ANSWER_PATTERN.search(line)
        if match is None:
            return Verdict(
                correct=False,
                step=FINAL_LABEL,
                line=index,
                segment=line,
                reason='The final response does not say "So the answer is ...".',
            )
        answer = match.group(1).strip()
        if answer != example.answer:
            return Verdict(
                correct=False,
                step=FINAL_LABEL,
                line=index,
                segment=answer,
                reason=f'The answer is "{example.answer}", not "{answer}".',
            )
        return Verdict(correct=True)

    def improve(self, example: Example, rationale: str, verdict: Verdict) -> str:
        """The gold final response: there are no checked steps worth keeping from the attempt."""
        return rationale if verdict.correct else example.rationale
