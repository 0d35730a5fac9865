"""`agora teacher dp-train`: fine-tune a teacher's generator on its private data under DP-SGD.

The plan (noise, sampling rate, steps) is fixed and its epsilon charged to the node's ledger
*before* training starts, in one transaction with the budget check, so it is safe beside a
running node sharing the data dir. The trained model is written to --out; point `model.source`
at it and restart the node: sampling from it is post-processing and costs nothing more, and its
lessons say mechanism "dp_sgd".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.cli_errors import EXIT_OK, UsageError
from node.config import Settings


def add_command(commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    teacher = commands.add_parser(
        "teacher",
        help="teacher tools: DP-SGD fine-tuning of the generator",
        description="Tools for a teacher node's operator (the node serves its lessons with `agora run`).",
    )
    sub = teacher.add_subparsers(dest="teacher_command", metavar="SUBCOMMAND", required=True, help="one of:")
    train = sub.add_parser(
        "dp-train",
        help="fine-tune the teacher's model on its private data under DP-SGD, charged to its ledger",
        description="Fine-tune the model of the node with this config on teacher.private_data[TASK] with "
        "Opacus DP-SGD (per-record clipping, Gaussian noise, Poisson sampling). The epsilon of the whole "
        "run is charged to the node's privacy ledger before training starts; the run is refused (exit 1) "
        "if it would exceed privacy.epsilon_budget.",
        epilog="example: agora teacher dp-train --config node.yaml --task arithmetic --epsilon 2 --out models/dp",
    )
    config_arguments(train)
    train.add_argument("--task", required=True, help="task whose private data to train on")
    budget = train.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epsilon", type=float, metavar="E", help="target epsilon of the run (finds the noise)")
    budget.add_argument("--noise-multiplier", type=float, metavar="SIGMA", help="noise multiplier sigma")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the trained model")
    train.add_argument("--batch", type=int, default=8, metavar="N", help="expected batch size (default 8)")
    train.add_argument("--epochs", type=float, default=1.0, metavar="X", help="passes over the data (default 1)")
    train.add_argument("--max-grad-norm", type=float, default=1.0, metavar="C", help="per-record clip (default 1)")
    train.add_argument("--lr", type=float, default=1e-3, metavar="X", help="learning rate (default 1e-3)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: torch and Opacus take seconds to load, and every other command skips them.
    from tqdm import tqdm

    from node.llm.host import ModelHost
    from node.llm.training import TrainingExample
    from node.privacy.accounting import dp_sgd_charge
    from node.privacy.dp_sgd import dp_finetune, plan_dp_sgd
    from node.privacy.ledger import BudgetExhausted, PrivacyLedger
    from node.store import STORE_FILE, Store, StoreError
    from node.tasks import TaskError, get_task
    from teacher.private import read_records

    teacher, privacy = settings.teacher, settings.privacy
    if args.task not in teacher.private_data:
        raise UsageError(f"teacher.private_data has no file for task {args.task!r}")
    records = read_records(teacher.private_data[args.task])
    try:
        plan = plan_dp_sgd(
            len(records),
            target_epsilon=args.epsilon,
            noise_multiplier=args.noise_multiplier,
            delta=privacy.delta,
            expected_batch=args.batch,
            epochs=args.epochs,
            max_grad_norm=args.max_grad_norm,
        )
        host = ModelHost.from_settings(settings.model, get_task(args.task))
    except (ValueError, TaskError, OSError) as exc:
        raise UsageError(str(exc)) from None
    try:
        store = Store(settings.node.data_dir / STORE_FILE)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    ledger = PrivacyLedger(store, privacy.epsilon_budget, privacy.delta, privacy.per_recipient_epsilon)
    print(
        f"DP-SGD on {len(records)} private records of {args.task}: sigma {plan.noise_multiplier:.4g}, "
        f"q {plan.sample_rate:.4g}, {plan.steps} steps, clip {plan.max_grad_norm:g}: "
        f"epsilon {plan.epsilon:.4g} at delta {plan.delta:g}"
    )
    try:
        event = ledger.charge(
            dp_sgd_charge(plan.noise_multiplier, plan.sample_rate, plan.steps, plan.max_grad_norm), recipient=""
        )
    except BudgetExhausted as exc:
        print(f"agora teacher dp-train: refused: {exc}", file=sys.stderr)
        return 1
    examples = [TrainingExample(f"Input: {r.input}\nOutput: ", r.output) for r in records]
    bar = tqdm(total=plan.steps, desc="dp-sgd", unit="step", disable=not sys.stderr.isatty())

    def progress(done: int, total: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        # The noise must be unpredictable: a fresh OS-random seed every run.
        result = dp_finetune(
            host, examples, plan, lr=args.lr, seed=int.from_bytes(os.urandom(8), "big"), progress=progress
        )
    except BaseException:
        ledger.settle(event.seq, "failed")
        raise
    finally:
        bar.close()
    host.save(args.out)
    ledger.settle(event.seq, "released")
    print(
        f"trained {plan.steps} steps; Opacus reports epsilon {result.epsilon:.4g}; model written to {args.out}\n"
        f"ledger: epsilon spent {ledger.spent:.4g} of {ledger.budget:g}; set model.source: {args.out} and restart"
    )
    store.close()
    return EXIT_OK
