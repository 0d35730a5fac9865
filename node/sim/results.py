"""What a finished simulation did, read back from its nodes' own records: checkpoints (accuracy
curves), SQLite stores (lessons by kind, the privacy ledger), JSON logs (blocked lessons, resumes,
failovers), then the Secret Sharer audit of every model. The result is metrics.json's `nodes`,
`lessons_by_kind`, `blocked_by_reason` and `secret_sharer`; report.py renders it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from node.config import load_settings
from node.privacy.audit import Canary, audit
from node.privacy.ledger import read_ledger
from node.process import read_log_records
from node.sim.network import SimulatedNode, TeacherAssets
from node.store import StoreError
from student import checkpoints
from student.build import CHECKPOINT_DIR


def _log_events(node: SimulatedNode, event: str) -> list[dict[str, object]]:
    return [r for log in node.logs if log.exists() for r in read_log_records(log) if r.get("event") == event]


def _split(values: dict[str, Any]) -> dict[str, float]:
    return {"seen": float(values.get("seen", 0.0)), "unseen": float(values.get("unseen", 0.0))}


def node_result(node: SimulatedNode, joined_after_s: float | None, steps_planned: int) -> dict[str, Any]:
    settings = load_settings(node.config_path)
    try:
        ledger = read_ledger(node.data_dir, settings.privacy.epsilon_budget, settings.privacy.delta)
        spent = ledger.spent
    except StoreError:
        spent = 0.0
    result: dict[str, Any] = {
        "name": node.name,
        "role": "teacher" if node.role == "teacher" else "student",
        "baseline": node.role == "baseline",
        "algorithm": settings.student.algorithm if node.learns else None,
        "seed": settings.student.seed if node.learns else None,
        "address": node.address,
        "metrics_url": node.metrics_url,
        "netns": node.host.netns if node.host else None,
        "joined": joined_after_s is not None,
        "joined_after_s": joined_after_s,
        "starts": node.starts,
        "exit_code": node.exit_code,
        "epsilon_spent": spent,
        "epsilon_budget": settings.privacy.epsilon_budget,
    }
    if node.role == "teacher":
        served = node.query("SELECT kind, COUNT(*) FROM lessons GROUP BY kind")
        blocked = Counter(str(r.get("reason")) for r in _log_events(node, "lesson_blocked"))
        result["lessons_served"] = {str(kind): int(n) for kind, n in served}
        result["lessons_blocked"] = dict(blocked)
        return result
    if settings.student.algorithm == "tnd" and settings.student.tnd_mode == "clm_only":
        result["algorithm"] = "tnd (clm_only)"
    if settings.student.algorithm == "social":  # which use of the lessons ran: in_context, fine_tune or both
        result["algorithm"] = f"social ({settings.student.social_use})"
    latest = checkpoints.latest(node.data_dir / CHECKPOINT_DIR)
    history = latest.state().get("history", []) if latest is not None else []
    curve = [{"step": int(h["step"]), **_split(h)} for h in history]
    received = node.query("SELECT kind, COUNT(*) FROM received_lessons GROUP BY kind")
    applied = node.query("SELECT COUNT(*) FROM received_lessons WHERE applied_step IS NOT NULL")
    steps = node.query("SELECT MAX(step) FROM updates")
    result.update(
        {
            "steps_done": int(steps[0][0] or 0) if steps else 0,
            "steps_planned": steps_planned,
            "curve": curve,
            "accuracy_before": {k: v for k, v in curve[0].items() if k != "step"} if curve else _split({}),
            "accuracy_after": {k: v for k, v in curve[-1].items() if k != "step"} if curve else _split({}),
            "lessons_received": {str(kind): int(n) for kind, n in received},
            "lessons_applied": int(applied[0][0]) if applied else 0,
            "resumed_from": [int(str(r["step"])) for r in _log_events(node, "student_resumed")],
            "failovers": len(_log_events(node, "teacher_failover")),
        }
    )
    return result


def model_dir(node: SimulatedNode, teacher: TeacherAssets) -> Path | None:
    """The model a node ends with: a student's newest checkpoint, or the teacher's model."""
    if node.role == "teacher":
        return teacher.model
    latest = checkpoints.latest(node.data_dir / CHECKPOINT_DIR)
    return latest.model_dir if latest is not None else None


def secret_sharer(
    nodes: list[SimulatedNode], teacher: TeacherAssets, canary: Canary, candidates: int, runs: int
) -> dict[str, Any]:
    """Rank of the planted secret under every model (teachers and students) among `candidates`."""
    from node.llm.host import ModelHost
    from node.llm.placement import resolve_placement

    placement = resolve_placement("auto", "auto")
    candidates = min(candidates, 1 + len(canary.words)) if canary.kind == "word" else candidates
    models: list[dict[str, Any]] = []
    for node in nodes:
        directory = model_dir(node, teacher)
        if directory is None:
            continue
        host = ModelHost.load(directory, placement)
        try:
            report = audit(host, [canary], runs=runs, candidates=candidates)
        finally:
            host.close()
        result = report.results[0]
        models.append(
            {
                "node": node.name,
                "role": "teacher" if node.role == "teacher" else "student",
                "mean_rank": result.mean_rank,
                "min_rank": result.min_rank,
                "rank0": result.rank0_count,
                "exposure": result.exposure,
            }
        )
    planted = "the teacher's training text and private data" if canary.kind == "word" else "the teacher's private data"
    return {
        "canary": canary.masked,
        "planted_in": planted,
        "candidates": candidates,
        "runs": runs,
        "chance_rank": (candidates - 1) / 2,
        "models": models,
    }


def totals(nodes: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Lessons exchanged by kind (as the teachers released them) and blocked lessons by reason."""
    by_kind: Counter[str] = Counter()
    blocked: Counter[str] = Counter()
    for node in nodes:
        by_kind.update(node.get("lessons_served", {}))
        blocked.update(node.get("lessons_blocked", {}))
    return dict(by_kind), dict(blocked)
