"""The first stage: SFT on the task's gold rationales, the student's own data, before any lesson.

Without DP it is `student.warmup_steps` plain updates at `student.lr` on gold problems. With
`student.dp_epsilon` it is one DP-SGD run (Opacus; Poisson sampling at q = expected batch /
records; the noise found for the target epsilon) over `student.dp_records` gold records: its
(epsilon, delta) is charged to the node's privacy ledger before training starts, and the run is
refused if it would take the node past its budget.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from node.config import Settings
from node.llm.sft import sft_example
from node.llm.training import TrainingExample
from node.privacy.accounting import dp_sgd_charge
from node.privacy.dp_sgd import DpSgdResult, dp_finetune, plan_dp_sgd
from node.privacy.ledger import PrivacyLedger
from node.tasks.base import Task
from student.learner import LearnerContext

log = logging.getLogger("agora.student")

Progress = Callable[[int, int, float], None]  # (steps done, steps in all, last loss)


def gold_examples(task: Task, n: int, seed: int, feedback: bool) -> list[TrainingExample]:
    return [sft_example(task, e, feedback) for e in task.generate("train", n, seed)]


async def warm_up(ctx: LearnerContext, settings: Settings, ledger: PrivacyLedger, progress: Progress) -> str:
    """Run the first stage; returns a sentence for the summary."""
    s, host = ctx.settings, ctx.host
    if s.dp_epsilon is not None:
        result = await dp_warm_up(ctx, settings, ledger, progress)
        plan = result.plan
        return (
            f"DP-SGD warm-up on {s.dp_records} gold records: "
            f"sigma {plan.noise_multiplier:.4g}, q {plan.sample_rate:.4g}, "
            f"{plan.steps} steps; epsilon {result.epsilon:.4g} at delta {plan.delta:g} charged to the ledger"
        )
    for step in range(1, s.warmup_steps + 1):
        batch = gold_examples(ctx.task, s.batch_size, s.seed * 1_000_003 + 900_000 + step, s.gold_feedback)
        loss = await host.run(host.train_step, batch, ctx.optimizer)
        progress(step, s.warmup_steps, loss)
    return f"warm-up: {s.warmup_steps} SFT updates on gold rationales"


async def dp_warm_up(ctx: LearnerContext, settings: Settings, ledger: PrivacyLedger, progress: Progress) -> DpSgdResult:
    """Plan, charge, train: BudgetExhausted (nothing trained) when the ledger refuses the charge."""
    s = ctx.settings
    assert s.dp_epsilon is not None
    records = gold_examples(ctx.task, s.dp_records, s.seed, s.gold_feedback)
    plan = plan_dp_sgd(
        len(records),
        target_epsilon=s.dp_epsilon,
        delta=s.dp_delta or settings.privacy.delta,
        expected_batch=min(s.dp_expected_batch, len(records)),
        epochs=s.dp_epochs,
        max_grad_norm=s.dp_max_grad_norm,
    )
    charge = dp_sgd_charge(plan.noise_multiplier, plan.sample_rate, plan.steps, plan.max_grad_norm)
    event = ledger.charge(charge, recipient="")
    log.info(
        "DP-SGD on %d own records: sigma %.4g, q %.4g, %d steps: epsilon %.4g at delta %g (ledger: %.4g of %g spent)",
        len(records),
        plan.noise_multiplier,
        plan.sample_rate,
        plan.steps,
        plan.epsilon,
        plan.delta,
        ledger.spent,
        ledger.budget,
    )
    try:
        # The noise must be unpredictable: a fresh OS-random seed every run.
        noise_seed = int.from_bytes(os.urandom(8), "big")
        result = await ctx.host.run(dp_finetune, ctx.host, records, plan, lr=s.lr, seed=noise_seed, progress=progress)
    except BaseException:
        ledger.settle(event.seq, "failed")
        raise
    ledger.settle(event.seq, "released")
    return result
