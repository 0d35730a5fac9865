"""`agora learn`: run a student node against the network until it has learned `student.steps` updates.

The node starts as `agora run` would (gRPC server, membership through its seeds, metrics), then
the learning loop runs beside it: a progress bar on a terminal, a log line per evaluation, and a
summary at the end. Run it again with the same `node.data_dir` to resume from the newest
checkpoint; Ctrl-C stops cleanly, keeping the last checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.cli_errors import EXIT_FAILED, EXIT_OK, UsageError, table_lines
from node.config import Settings
from node.logs import configure_logging

if TYPE_CHECKING:
    from student.loop import RunSummary

log = logging.getLogger("agora.cli")


def add_command(commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    learn = commands.add_parser(
        "learn",
        help="run a student: ask teachers for lessons and learn from them",
        description="Start a student node (as `agora run` does), learn student.steps updates with "
        "student.algorithm from the teachers of student.task in the network, evaluate on held-out "
        "seen/unseen problems, checkpoint, and print a summary. Running it again with the same "
        "node.data_dir resumes from the newest checkpoint. Exit 0 when done, 1 when learning "
        "failed (no teacher answered, budget refused), 2 for a bad config.",
        epilog="example: agora learn --config student.yaml --set student.steps=50",
    )
    config_arguments(learn)
    learn.add_argument("--steps", type=int, metavar="N", help="updates to reach (student.steps)")
    learn.add_argument("--algorithm", help="tripost, yoda, social, tnd or sft (student.algorithm)")
    learn.add_argument("--log-format", choices=["human", "json"], help="log line format (default: node.log_format)")
    learn.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity (default: node.log_level)"
    )


def flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "student": {"steps": args.steps, "algorithm": args.algorithm},
        "node": {"log_format": args.log_format, "log_level": args.log_level},
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    if "student" not in settings.node.roles:
        raise UsageError("node.roles must include student to learn (e.g. --set node.roles=[student])")
    configure_logging(settings.node.log_level, settings.node.log_format)
    try:
        summary = asyncio.run(_learn(settings))
    except OSError as exc:
        log.error("student %s cannot start: %s", settings.node.name, exc)
        return EXIT_FAILED
    if summary is None:
        return EXIT_FAILED
    print("\n".join(summary_lines(summary, settings)))
    return EXIT_OK


async def _learn(settings: Settings) -> RunSummary | None:
    from tqdm import tqdm

    from node.app import Node
    from node.privacy.ledger import BudgetExhausted
    from student.build import build_student
    from student.provenance import LessonReused
    from student.teachers import LessonRequestError, NoTeacher

    node = Node(settings)
    run = build_student(settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)
    await node.start()
    bar = tqdm(total=settings.student.steps, desc=run.learner.name, unit="step", disable=not sys.stderr.isatty())

    def on_step(step: int, total: int, result: Any) -> None:
        bar.n = step
        bar.set_postfix(loss="-" if result.loss is None else f"{result.loss:.3f}", lessons=len(result.applied))

    try:
        return await run.run(on_step=on_step)
    except (NoTeacher, LessonRequestError, BudgetExhausted, LessonReused, ValueError) as exc:
        log.error("learning stopped at step %d: %s", run.step, exc, extra={"event": "student_failed"})
        return None
    finally:
        bar.close()
        await node.stop()
        run.ctx.host.close()


def summary_lines(summary: RunSummary, settings: Settings) -> list[str]:
    def pct(value: float | None) -> str:
        return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"

    resumed = f", resumed from step {summary.resumed_from}" if summary.resumed_from is not None else ""
    early = " (the algorithm finished early)" if summary.finished_early else ""
    lines = [
        f"{summary.algorithm} on {summary.task}: {summary.steps_done} steps in {summary.seconds:.1f}s{resumed}{early}",
        *table_lines(
            ["SPLIT", "BEFORE", "AFTER"],
            [[split, pct(summary.before.get(split)), pct(summary.after.get(split))] for split in summary.after],
        ),
    ]
    if summary.lessons is not None and summary.pool is not None:
        got, pool = summary.lessons, summary.pool
        teachers = ", ".join(f"{name} {count}" for name, count in sorted(pool.by_teacher.items())) or "none"
        lines.append(
            f"lessons: {got.received} received "
            f"({got.applied} applied, {got.discarded} set aside, {got.unused} unused); "
            f"this run: {pool.replayed} replayed after a crash, {pool.blocked} blocked by a teacher's guard, "
            f"{pool.failovers} failovers; from teachers: {teachers}"
        )
    lines.append(
        f"privacy: epsilon {summary.epsilon_spent:.4g} of {settings.privacy.epsilon_budget:g} spent by this node"
    )
    lines += [f"note: {note}" for note in summary.notes]
    lines.append(f"checkpoint: {summary.checkpoint}")
    return lines
