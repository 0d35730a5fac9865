"""`agora privacy --config node.yaml`: a teacher's privacy ledger, what it spent and what is left.

Reads ``<data_dir>/agora.db`` read-only, so it works while the node runs and after it stopped.
The total is composed again from the recorded events by the same accountant the node uses.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.cli_errors import EXIT_OK, UsageError, table_lines
from node.config import Settings
from node.store import StoreError

if TYPE_CHECKING:  # the accountant brings Opacus and torch; only `run` needs it
    from node.privacy.ledger import LedgerEvent, LedgerSummary


def add_command(commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    privacy = commands.add_parser(
        "privacy",
        help="print a teacher's privacy ledger: every DP release, epsilon spent and left",
        description="Print the privacy ledger of the node with this config: every DP event it charged "
        "(mechanism, parameters, its own epsilon, recipient, lesson, status), then the epsilon spent "
        "composed by the accountant at privacy.delta, the budget and what is left.",
        epilog="example: agora privacy --config node.yaml --format json",
    )
    config_arguments(privacy)
    privacy.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    privacy.add_argument("--last", type=int, default=50, metavar="N", help="table: show the last N events (default 50)")


def _fields(event: LedgerEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at_unix_ms": event.at_unix_ms,
        "mechanism": event.charge.mechanism,
        "parameters": dict(event.charge.parameters),
        "epsilon": event.epsilon,
        "delta": event.delta,
        "recipient": event.recipient,
        "lesson_id": event.lesson_id,
        "status": event.status,
        "epsilon_spent_after": event.epsilon_spent_after,
    }


def render_table(summary: LedgerSummary, last: int) -> str:
    head = (
        f"epsilon spent {summary.spent:.4f} of {summary.budget:g} (delta {summary.delta:g}); "
        f"left {summary.left:.4f}; {len(summary.events)} events"
    )
    if not summary.events:
        return head + "\n(no releases charged yet)"
    columns = [
        "SEQ",
        "TIME (UTC)",
        "MECHANISM",
        "PARAMETERS",
        "EPSILON",
        "RECIPIENT",
        "LESSON",
        "STATUS",
        "SPENT AFTER",
    ]
    rows = [
        [
            str(e.seq),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at_unix_ms / 1000)),
            e.charge.mechanism,
            " ".join(f"{k}={v:g}" for k, v in sorted(e.charge.parameters.items())),
            f"{e.epsilon:.4f}",
            e.recipient[:12] or "-",
            e.lesson_id[:12] or "-",
            e.status,
            f"{e.epsilon_spent_after:.4f}",
        ]
        for e in summary.events[-last:]
    ]
    lines = table_lines(columns, rows)
    shown = f"(last {last} of {len(summary.events)})" if len(summary.events) > last else ""
    return "\n".join([head, *lines, *([shown] if shown else [])])


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.last < 1:
        raise UsageError("--last must be 1 or more")
    from node.privacy.ledger import read_ledger

    privacy = settings.privacy
    try:
        summary = read_ledger(settings.node.data_dir, privacy.epsilon_budget, privacy.delta)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        document = {
            "epsilon_spent": summary.spent,
            "epsilon_budget": summary.budget,
            "epsilon_left": summary.left,
            "delta": summary.delta,
            "events": [_fields(event) for event in summary.events],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render_table(summary, args.last))
    return EXIT_OK
