"""Plain SFT on gold rationales: the baseline every interactive algorithm is compared with.

Each update trains on a fresh batch of gold problems from the task's generator (the student's
own data; no teacher is asked). Under `student.dp_epsilon` all of the SFT is the warm-up's
DP-SGD run, so no further plain update follows it.
"""

from __future__ import annotations

from node.llm.training import TrainingExample
from student.learner import Learner, StepResult, Tagged


class SftLearner(Learner):
    name = "sft"

    async def step(self, step: int) -> StepResult | None:
        s = self.ctx.settings
        if s.dp_epsilon is not None:
            return None
        task = self.ctx.task
        problems = task.generate("train", s.batch_size, seed=s.seed * 1_000_003 + step)
        batch = [Tagged(TrainingExample(task.prompt(e.question), e.rationale), (), "gold") for e in problems]
        return await self.train_on(batch)
