"""Social Learning (Mohtashami et al. 2024): a student with no data learns from teachers' lessons.

1. Ask up to `social_teachers` teachers of the task, each for an instruction (`Instruct`: written
   from its private examples, released through DP keyword aggregation) and for
   `social_examples_per_teacher` synthetic examples (`Exemplify`: noisy-vote released, never copies).
2. Aggregate. `random` keeps n examples at random and one instruction at random. `voting` asks
   every teacher to score every candidate (`Score`, SCORE_KIND_LIKELIHOOD: length-normalised
   log-likelihood under its model), ranks the candidates under each teacher and keeps the n with
   the best mean rank, and the instruction with the best mean rank likewise.
3. Use the lessons: `in_context` puts the instruction and the kept examples before every prompt
   at inference; `fine_tune` trains on the kept examples (cycling over them, batch by batch);
   `both` does both. In-context alone is one step: nothing is trained. The prefix holds what fits
   `social_context_tokens`, chosen by `social_context_select` (`student.social_context`), and is
   saved in every checkpoint; evaluation puts it before every question in both in-context modes.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from node.llm.tokenizer import encode
from node.llm.training import TrainingExample
from node.rpc.agora.v1 import teacher_pb2
from student import social_context
from student.learner import EVAL_SPLITS, Learner, StepResult, Tagged
from student.social_context import InContext

log = logging.getLogger("agora.student")


@dataclass(frozen=True)
class Candidate:
    """A lesson text that competes in aggregation, and the lesson it came from."""

    text: str  # what teachers score: the instruction, or the example's output
    context: str  # what it is scored after: "" for instructions, the example's input otherwise
    lesson_id: str
    teacher: str
    input: str = ""
    output: str = ""


def mean_ranks(scores: list[list[float]]) -> list[float]:
    """Each candidate's mean rank over the voters (0 = every voter's favourite); scores[voter][candidate]."""
    totals = [0.0] * (len(scores[0]) if scores else 0)
    for row in scores:
        order = sorted(range(len(row)), key=lambda i: -row[i])
        for rank, index in enumerate(order):
            totals[index] += rank
    return [total / max(len(scores), 1) for total in totals]


class SocialLearner(Learner):
    name = "social"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instruction = ""
        self.examples: list[tuple[str, str]] = []  # the kept (input, output) pairs, in the aggregator's order
        self.gathered = False
        self.cursor = 0  # fine-tuning position in the kept examples
        self.context: InContext | None = None  # the prompt prefix (in_context and both), once gathered

    def state_dict(self) -> dict[str, Any]:
        state = {"instruction": self.instruction, "examples": self.examples, "gathered": self.gathered}
        context = None if self.context is None else self.context.to_json()
        return {
            **super().state_dict(),
            **state,
            "cursor": self.cursor,
            "use": self.ctx.settings.social_use,
            "context": context,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.instruction, self.gathered = str(state["instruction"]), bool(state["gathered"])
        self.examples = [(str(i), str(o)) for i, o in state["examples"]]
        self.cursor = int(state["cursor"])
        saved = state.get("context")
        self.context = None if saved is None else InContext.from_json(saved)
        if self.gathered:
            self.use_lessons("restored from the checkpoint")

    def use_lessons(self, how: str) -> None:
        """Build the prompt prefix where this mode uses one (again, when the checkpoint's was built
        under other settings), and note in the run's summary which mode runs with what."""
        s = self.ctx.settings
        if s.social_use == "fine_tune":
            self.context = None
            note = f"{len(self.examples)} kept examples for fine-tuning, nothing in the prompt"
        else:
            wanted = (s.social_context_tokens, s.social_context_select)
            if self.context is None or (self.context.requested, self.context.select) != wanted:
                how = f"{how}; prefix built" if self.context is None else f"{how}; prefix rebuilt for new settings"
                self.context = self.build_context()
            note = self.context.describe()
        line = f"Social Learning ({s.social_use}, lessons {how}): {note}"
        shown = self.context or InContext("", (), 0, 0, len(self.examples), 0, "")
        facts = {"instruction": bool(shown.instruction), "in_prompt": len(shown.examples), "tokens": shown.tokens}
        log.info(line, extra={"event": "social_lessons", "use": s.social_use, "kept": len(self.examples), **facts})
        self.ctx.log.append(line)

    def context_budget(self) -> int:
        """Tokens the prefix may take: social_context_tokens, never more than the model's context
        less the longest evaluation question and its answer."""
        s, host, task = self.ctx.settings, self.ctx.host, self.ctx.task
        questions = [e for split in EVAL_SPLITS for e in task.generate(split, s.eval_n, s.seed)]
        reserve = max(
            (len(encode(host.tokenizer, task.prompt(e.question))) + self.answer_budget(e) for e in questions), default=0
        )
        room = max(host.max_positions - reserve, 0)
        return min(s.social_context_tokens, room) if s.social_context_tokens else room

    def build_context(self) -> InContext:
        s, tokenizer = self.ctx.settings, self.ctx.host.tokenizer
        return social_context.build(
            self.instruction,
            self.examples,
            self.ctx.task.prompt,
            lambda text: len(encode(tokenizer, text, add_bos=False)),
            self.context_budget(),
            s.social_context_select,
            s.seed,
            s.social_context_tokens,
        )

    def prompt_prefix(self) -> str:
        if self.ctx.settings.social_use == "fine_tune" or self.context is None:
            return ""
        return self.context.prefix(self.ctx.task.prompt)

    def in_context(self, prompt: str, answer_tokens: int) -> str:
        """The prefix before the prompt; for a question longer than the budget left room for, the
        prefix less its last examples (then its instruction), so that the model's context holds it."""
        full = self.prompt_prefix() + prompt
        if self.context is None or self.fits(full, answer_tokens):
            return full
        fitting = social_context.shrink(
            self.context, self.ctx.task.prompt, lambda p: self.fits(p + prompt, answer_tokens)
        )
        log.debug(
            "Social Learning: a long question keeps %d of %d prefix characters", len(fitting), len(full) - len(prompt)
        )
        return fitting + prompt

    async def step(self, step: int) -> StepResult | None:
        s = self.ctx.settings
        if not self.gathered:
            applied, discarded = await self.gather()
            self.gathered = True
            batch = self.next_batch(applied)
            if s.social_use == "in_context" or not batch:
                return StepResult(None, 0, frozenset(applied), frozenset(discarded))
            result = await self.train_on(batch)
            return StepResult(result.loss, result.examples, frozenset(applied), frozenset(discarded), result.kinds)
        if s.social_use == "in_context" or not self.examples:
            return None
        return await self.train_on(self.next_batch(set()))

    def next_batch(self, lessons: set[str]) -> list[Tagged]:
        """The next batch of kept examples, cycling; the round's lessons go with the first batch."""
        if not self.examples:
            return []
        size = min(self.ctx.settings.batch_size, len(self.examples))
        rows = [self.examples[(self.cursor + k) % len(self.examples)] for k in range(size)]
        self.cursor = (self.cursor + size) % len(self.examples)
        task = self.ctx.task
        batch = [Tagged(TrainingExample(task.prompt(i), o), (), "synthetic") for i, o in rows]
        batch[0] = Tagged(batch[0].example, tuple(sorted(lessons)), "synthetic")
        return batch

    async def gather(self) -> tuple[set[str], set[str]]:
        """Ask the teachers, aggregate; the lessons kept, and those the aggregator left out."""
        s, pool = self.ctx.settings, self.ctx.teachers
        teachers = [peer.node_id for peer in pool.teachers()[: s.social_teachers]]
        instructions: list[Candidate] = []
        examples: list[Candidate] = []
        for teacher in teachers:
            asked = await pool.lesson("Instruct", teacher_pb2.InstructRequest(task=s.task), teacher=teacher)
            if asked is not None and asked.lesson.instruction.text.strip():
                instructions.append(Candidate(asked.lesson.instruction.text, "", asked.lesson_id, asked.teacher))
            request = teacher_pb2.ExemplifyRequest(task=s.task, count=s.social_examples_per_teacher)
            got = await pool.lesson("Exemplify", request, teacher=teacher)
            if got is None:
                continue
            for example in got.lesson.examples.examples:
                context = self.ctx.task.prompt(example.input)
                examples.append(
                    Candidate(example.output, context, got.lesson_id, got.teacher, example.input, example.output)
                )
        log.info(
            "Social Learning: %d instructions and %d examples from %d teachers",
            len(instructions),
            len(examples),
            len(teachers),
        )
        kept_instruction = await self.aggregate(instructions, 1, teachers)
        kept_examples = await self.aggregate(examples, s.social_examples, teachers)
        self.instruction = kept_instruction[0].text if kept_instruction else ""
        self.examples = [(c.input, c.output) for c in kept_examples]
        self.context = None
        self.use_lessons("gathered")
        received = {c.lesson_id for c in instructions + examples}
        applied = {c.lesson_id for c in kept_instruction + kept_examples}
        for candidate in kept_instruction + kept_examples:
            pool.credit(candidate.teacher, True)
        return applied, received - applied

    async def aggregate(self, candidates: list[Candidate], n: int, teachers: list[str]) -> list[Candidate]:
        """n candidates, by the configured aggregator (random, or the teachers' likelihood votes)."""
        if len(candidates) <= n:
            return candidates
        s = self.ctx.settings
        if s.social_aggregator == "random":
            return random.Random(s.seed).sample(candidates, n)
        items = [teacher_pb2.ScoreItem(question=c.context, text=c.text) for c in candidates]
        votes = []
        for teacher in teachers:
            request = teacher_pb2.ScoreRequest(task=s.task, kind=teacher_pb2.SCORE_KIND_LIKELIHOOD, items=items)
            scores = await self.ctx.teachers.score(teacher, request)
            if scores is not None:
                votes.append(scores)
        if not votes:  # nobody could vote: fall back to random, and say so
            log.warning("Social Learning: no teacher could vote; keeping %d examples at random", n)
            return random.Random(s.seed).sample(candidates, n)
        ranks = mean_ranks(votes)
        order = sorted(range(len(candidates)), key=lambda i: (ranks[i], i))
        return [candidates[i] for i in order[:n]]
