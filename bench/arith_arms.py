"""How E1 and E2 run their arms and judge them: every student node of every arm and seed in one
simulated network beside one teacher node, each final model graded on the same problems, and the
goals both benchmarks state in the same form."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from bench.arith_common import final_model, grade
from bench.common import Half, Tuning
from bench.goals import Goal
from bench.stats import excludes_zero
from node.sim.config import SimConfig, SimNode
from node.sim.run import Simulation
from node.tasks import Example, Split

# Every student asks at once (a whole collection of critiques or posed questions): the teacher's
# per-peer rate limit must not be what the benchmark measures.
UNLIMITED = {"security": {"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000}}


def command(name: str, quick: bool, half: Half, tuning: Tuning) -> str:
    """The command line that reproduces a run, as its results record it."""
    words = [f"python -m bench.{name}"] + ["--quick"] * quick + ["--validation"] * (half != "test")
    words += [] if tuning.seeds is None else [f"--seeds {tuning.seeds}"]
    words += [f"--student {key}={json.dumps(value)}" for key, value in tuning.student.items()]
    words += [] if tuning.stage_a_improvement is None else [f"--stage-a-improvement {tuning.stage_a_improvement}"]
    return " ".join(words)


P = TypeVar("P")


def tuned(plan: P, tuning: Tuning) -> P:
    """A benchmark's plan (a dataclass with `seeds` and `stages`) with a tuning run's seeds and stage A."""
    if tuning.seeds is not None:
        plan = replace(plan, seeds=tuning.seeds)  # type: ignore[type-var]
    if tuning.stage_a_improvement is not None:
        stages = replace(plan.stages, improvement_share=tuning.stage_a_improvement)  # type: ignore[attr-defined]
        plan = replace(plan, stages=stages)  # type: ignore[type-var]
    return plan


def tuned_student(student: SimNode, tuning: Tuning) -> SimNode:
    """A student node with a tuning run's student.* settings over its arm's."""
    if not tuning.student:
        return student
    settings = dict(student.settings)
    settings["student"] = {**settings.get("student", {}), **tuning.student}
    return student.model_copy(update={"settings": settings})


def simulate(
    task: str,
    algorithm: str,
    teacher: str,
    students: Sequence[SimNode],
    updates: int,
    base: Path,
    out: Path,
    command_line: str,
    tuning: Tuning,
) -> dict[str, dict[str, Any]]:
    """Run the students (stage B, `updates` each, with a tuning run's student.* settings) beside a
    teacher node named `teacher` that serves stage A's model; each node's metrics by name."""
    config = SimConfig(
        task=task,
        algorithm=algorithm,
        nodes=[
            SimNode(name=teacher, role="teacher", settings=UNLIMITED),
            *(tuned_student(s, tuning) for s in students),
        ],
        steps=updates,
        eval_every=updates,
        eval_n=8,
        teacher_model=base,
        audit_candidates=10,
        audit_runs=1,
    )
    simulated = Simulation(config, out, command_line).run()
    return {n["name"]: n for n in json.loads(simulated.metrics.read_text())["nodes"]}


def grade_arms(
    base: Path,
    students: Sequence[SimNode],
    nodes: Mapping[str, Mapping[str, Any]],
    out: Path,
    problems: Mapping[Split, Sequence[Example]],
    chains: bool,
) -> dict[str, Any]:
    """Stage A's and every student's final model on the same problems, with each student's steps
    and lessons received. `chains`: room for attempt -> feedback -> updated answer (TriPosT's
    inference), else for one answer and its feedback line."""
    graded: dict[str, Any] = {"base": {k: v.to_json() for k, v in grade(base, problems, chains).items()}}
    for student in students:
        outcome = grade(final_model(out, student.name), problems, chains)
        graded[student.name] = {k: v.to_json() for k, v in outcome.items()}
        graded[student.name]["steps"] = nodes[student.name]["steps_done"]
        graded[student.name]["lessons_received"] = sum(nodes[student.name]["lessons_received"].values())
    return graded


def positive_gain(name: str, figure: Mapping[str, Any]) -> Goal:
    """A difference in points that must be above 0 with its 95% interval excluding 0."""
    interval = (float(figure["ci95"][0]), float(figure["ci95"][1]))
    met = figure["value"] > 0 and excludes_zero(interval)
    return Goal(name, figure["value"], "> 0 points and the 95% CI excludes 0", met, interval)


def at_least(name: str, figure: Mapping[str, Any], target: float, described: str) -> Goal:
    """A figure with its interval that must reach `target` (`described`, as the results print it)."""
    interval = (float(figure["ci95"][0]), float(figure["ci95"][1]))
    return Goal(name, figure["value"], described, figure["value"] >= target, interval)


def warm_minutes(result: Mapping[str, Any]) -> Goal:
    """What a rerun takes with stage A cached: 3 minutes in quick mode, 20 in full."""
    warm = (result["wall_s"] - result["stage_a_s"]) / 60
    limit = 3 if result["quick"] else 20
    return Goal("minutes_with_stage_a_cached", warm, f"<= {limit}", warm <= limit)


def goal_lines(goals: Sequence[Mapping[str, Any]], prefix: str = "") -> list[str]:
    """One markdown bullet per goal: value, interval, target, verdict."""
    lines = []
    for goal in goals:
        ci = "" if goal["ci95"] is None else f" [{goal['ci95'][0]:.3g}, {goal['ci95'][1]:.3g}]"
        verdict = "met" if goal["met"] else "missed"
        lines.append(f"- {prefix}{goal['name']}: {goal['value']:.3g}{ci} (target {goal['target']}): {verdict}")
    return lines
