"""Plain SFT on gold rationales: the baseline every interactive algorithm is compared with.

Each update trains on a batch of gold problems from the task's generator (the student's own
data, drawn from its training pool when the task has one; no teacher is asked), each ending with
the all-correct feedback unless `student.gold_feedback` is off. Under `student.dp_epsilon` all of
the SFT is the warm-up's DP-SGD run, so no further plain update follows it.
"""

from __future__ import annotations

from student.learner import Learner, StepResult


class SftLearner(Learner):
    name = "sft"

    async def step(self, step: int) -> StepResult | None:
        s = self.ctx.settings
        if s.dp_epsilon is not None:
            return None
        return await self.train_on(self.gold_batch(s.batch_size, seed=s.seed * 1_000_003 + step))
