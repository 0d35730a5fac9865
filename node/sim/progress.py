"""Live progress of a simulation: one line per node, from what an operator can see of it.

Steps and lessons come from the node's SQLite store (read-only beside the running node, and true
across restarts: a restarted student's counters start again at 0, its store does not); accuracy
and epsilon come from its Prometheus endpoint, as Grafana would show them.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from node.sim.network import SimulatedNode

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # nodes are local or on our bridge


@dataclass(frozen=True)
class NodeSnapshot:
    name: str
    role: str
    up: bool
    finished: bool  # a student that exited 0: done, not down
    step: int  # students: updates recorded so far; teachers: 0
    lessons: int  # students: lessons received; teachers: lessons released
    seen: float | None  # accuracy at the last evaluation (students)
    unseen: float | None
    epsilon_spent: float | None
    epsilon_budget: float | None
    blocked: int  # teachers: lessons the leakage guard blocked (this process's count)
    failovers: int  # students: lesson calls moved off a failed teacher, or backed off (this process's count)


def scrape(url: str, timeout_s: float = 2.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value; {} when it cannot be read."""
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _count(node: SimulatedNode, sql: str) -> int:
    rows = node.query(sql)  # [] while the node is starting
    value = rows[0][0] if rows else None
    return int(value) if value is not None else 0


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def _gauge(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    for (sample, sample_labels), value in samples.items():
        if sample == name and all((k, v) in sample_labels for k, v in labels.items()):
            return None if math.isnan(value) else value
    return None


def snapshot(node: SimulatedNode) -> NodeSnapshot:
    samples = scrape(node.metrics_url) if node.running else {}
    learner = node.learns
    return NodeSnapshot(
        name=node.name,
        role=node.role,
        up=node.running and bool(samples),
        finished=node.learns and node.exit_code == 0,
        step=_count(node, "SELECT MAX(step) FROM updates") if learner else 0,
        lessons=_count(node, "SELECT COUNT(*) FROM received_lessons" if learner else "SELECT COUNT(*) FROM lessons"),
        seen=_gauge(samples, "agora_eval_accuracy", split="seen"),
        unseen=_gauge(samples, "agora_eval_accuracy", split="unseen"),
        epsilon_spent=_gauge(samples, "agora_privacy_epsilon_spent"),
        epsilon_budget=_gauge(samples, "agora_privacy_epsilon_budget"),
        blocked=int(_sum(samples, "agora_lessons_blocked_total")),
        failovers=int(_sum(samples, "agora_teacher_failovers_total")),
    )


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:4.0f}%"


def progress_line(shot: NodeSnapshot, steps: int, elapsed_s: float) -> str:
    """e.g. `[  42s] ada      student   step  60/150  seen  25% unseen  12%  lessons  15  eps 0/8`"""
    head = f"[{elapsed_s:5.0f}s] {shot.name:<8} {shot.role:<8}"
    eps = "eps -" if shot.epsilon_spent is None else f"eps {shot.epsilon_spent:.3g}/{shot.epsilon_budget or 0:g}"
    if not shot.up:
        state = f"finished  step {shot.step:4d}/{steps}" if shot.finished else "down"
    elif shot.role == "teacher":
        state = f"serving   lessons {shot.lessons:4d}  blocked {shot.blocked}"
    else:
        state = (
            f"step {shot.step:4d}/{steps}  seen {_pct(shot.seen)} unseen {_pct(shot.unseen)}  lessons {shot.lessons:4d}"
        )
    return f"{head} {state}  {eps}" if shot.up else f"{head} {state}"
