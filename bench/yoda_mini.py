"""E2, YODA-mini: does progressive, interactive learning beat the same questions without it?

Every arm starts from E1's stage A (bench/arith_common.py, cached) and continues its
learning-rate schedule and optimizer for the same number of updates of the same batch size,
through real nodes over mTLS (`agora simulate`: a teacher node serving `Pose` and `Critique`
with the task's generator and scripted verifier, and one student node per arm and seed). The
student's own data is 300 basic questions (`train_pool=300`, the first 300 of the task's
16,000-question pool); the teacher poses 2 generalized variants and 1 harder question (one
operand more) from each:

* **(a) basic**: SFT on the gold rationales of the 300 basic questions (student.algorithm sft);
* **(b) gold-expanded**: SFT on the gold rationales of the basic and posed questions, in
  curriculum order (`yoda_control: gold_only`);
* **(c) YODA**: the student answers every basic and posed question, the teacher critiques, the
  student refines up to 2 rounds, and the whole collection is trained basic, then generalized,
  then harder; its wrong answers are context (weight 0), the feedback and verified answers targets;
* **(d) YODA shuffled**: the same records in shuffled order (`yoda_order: shuffled`).

(b) - (a) is what the expanded data adds, (c) - (b) what the interactive procedure adds and
(c) - (d) what the curriculum adds. Stage B is one collection, trained 3.25 passes in its order.
Every final model answers once, greedily (the paper's inference), on held-out basic
problems (2-3 operands, the seen split) and harder ones (4 operands, the unseen split), with 95%
bootstrap intervals over seeds and problems. The paper (Lu et al. 2024): +17.01 points on GSM8K
and +9.98 on MATH over SFT.

    python -m bench.yoda_mini                # full: 3 seeds, 1000 basic + 500 harder test problems
    python -m bench.yoda_mini --quick        # about 3 minutes
    python -m bench.yoda_mini --validation   # graded on the validation problems (for tuning)
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.arith_arms import (
    at_least,
    command,
    goal_lines,
    grade_arms,
    positive_gain,
    simulate,
    tuned,
    warm_minutes,
)
from bench.arith_common import POOL, QUICK_STAGES, STAGES, TASK, Stages, figures, gain, held_out, pct_ci
from bench.common import UNTUNED, Half, Tuning, markdown_table, run_tuned_benchmark
from bench.goals import Goal, goals_json
from bench.sft_base import base_model
from node.sim.config import SimNode

PAPER = "+17.01 points GSM8K, +9.98 MATH over SFT (Lu et al. 2024)"
ARMS = ("basic", "gold_expanded", "yoda", "yoda_shuffled")
NAMES = {
    "basic": "(a) SFT on the basic questions",
    "gold_expanded": "(b) gold answers of the expanded set",
    "yoda": "(c) YODA, curriculum order",
    "yoda_shuffled": "(d) YODA, shuffled",
}
GENERALIZED, HARDER_LEVELS = 2, 1


@dataclass(frozen=True)
class Plan:
    stages: Stages
    batch_size: int  # stage B's batch, in every arm
    basics: int  # the student's basic questions (its training pool)
    epochs: float  # passes over the expanded collection in stage B's updates
    seeds: int
    seen: int  # graded problems per split
    unseen: int

    @property
    def task(self) -> str:
        return TASK.replace(f"train_pool={POOL}", f"train_pool={self.basics}")


# 300 basic questions give 1200 records (1 + 2 generalized + 1 harder each): 3.25 passes fill stage
# B's 240 x 16 from one collection (3840 of 3900; the slack covers posed questions that fail).
FULL = Plan(STAGES, 16, 300, 3.25, 3, 1000, 500)
QUICK = Plan(QUICK_STAGES, 8, 8, 3.25, 1, 48, 24)


def _student(arm: str, seed: int, base: Path, plan: Plan) -> SimNode:
    student = plan.stages.continued(seed, plan.batch_size)
    if arm == "basic":
        student["algorithm"] = "sft"
    else:
        student |= {
            "yoda_questions": plan.basics,
            "yoda_generalized": GENERALIZED,
            "yoda_harder_levels": HARDER_LEVELS,
            "yoda_rounds": 2,
            "yoda_epochs": plan.epochs,
            "yoda_control": "gold_only" if arm == "gold_expanded" else "none",
            "yoda_order": "shuffled" if arm == "yoda_shuffled" else "curriculum",
        }
    name = f"{arm.replace('_', '-')}-{seed}"
    return SimNode(name=name, role="student", settings={"model": {"source": str(base)}, "student": student})


def run(quick: bool, out: Path, half: Half = "test", tuning: Tuning = UNTUNED) -> dict[str, Any]:
    plan = tuned(QUICK if quick else FULL, tuning)
    started = time.monotonic()
    base, base_figures = base_model(plan.stages.base())
    stage_a_s = time.monotonic() - started  # about 0 when the cached stage A is reused
    seeds = range(1, plan.seeds + 1)
    students = [_student(arm, seed, base, plan) for seed in seeds for arm in ARMS]
    cli = command("yoda_mini", quick, half, tuning)
    nodes = simulate(plan.task, "yoda", "teacher", students, plan.stages.stage_b, base, out, cli, tuning)
    learning_s = time.monotonic() - started - stage_a_s

    problems = held_out({"seen": plan.seen, "unseen": plan.unseen}, half)
    # YODA's inference is one answer (the paper grades it directly): no room for a self-refinement.
    graded = grade_arms(base, students, nodes, out, problems, chains=False)
    runs = {arm: [graded[f"{arm.replace('_', '-')}-{seed}"] for seed in seeds] for arm in ARMS}
    by_arm = {arm: {split: figures(runs[arm], split) for split in problems} for arm in ARMS}
    by_arm["base"] = {split: figures([graded["base"]], split) for split in problems}
    contrasts = {
        "yoda_minus_basic": ("yoda", "basic"),
        "data_expansion": ("gold_expanded", "basic"),
        "procedure": ("yoda", "gold_expanded"),
        "curriculum": ("yoda", "yoda_shuffled"),
    }
    points = {
        name: {split: dict(zip(("value", "ci95"), gain(runs[a], runs[b], split), strict=True)) for split in problems}
        for name, (a, b) in contrasts.items()
    }
    result: dict[str, Any] = {
        "quick": quick,
        "half": half,
        "plan": asdict(plan) | {"task": plan.task},
        "base": base_figures,
        "by_arm": by_arm,
        "points": points,
        "graded": graded,
        "learning_s": learning_s,
        "stage_a_s": stage_a_s,
        "wall_s": time.monotonic() - started,
    }
    result["goals"] = goals_json(goals(result))
    return result


def goals(result: dict[str, Any]) -> list[Goal]:
    curriculum = result["points"]["curriculum"]["unseen"]
    return [
        positive_gain("yoda_vs_basic_harder", result["points"]["yoda_minus_basic"]["unseen"]),
        at_least("yoda_vs_gold_harder", result["points"]["procedure"]["unseen"], -1, ">= -1 point"),
        Goal("yoda_curriculum", curriculum["value"], "recorded (no target)", True, tuple(curriculum["ci95"])),
        warm_minutes(result),
    ]


def table(result: dict[str, Any]) -> str:
    header = ["arm", "basic (seen)", "harder (unseen)"]
    rows = [["stage A (start of every arm)", *_cells(result["by_arm"]["base"])]]
    rows += [[NAMES[arm], *_cells(result["by_arm"][arm])] for arm in ARMS]
    lines = []
    for name, label in (
        ("data_expansion", "(b) - (a), data expansion"),
        ("procedure", "(c) - (b), procedure"),
        ("curriculum", "(c) - (d), curriculum"),
        ("yoda_minus_basic", "(c) - (a)"),
    ):
        basic, harder = result["points"][name]["seen"], result["points"][name]["unseen"]
        lines.append(f"- {label}: basic {_points(basic)}, harder {_points(harder)} points")
    lines += goal_lines(result["goals"], "goal ")
    plan = result["plan"]
    note = (
        f"Percent with 95% bootstrap intervals over {plan['seeds']} seed(s) and {plan['seen']} basic / "
        f"{plan['unseen']} harder {result['half']} problems; {plan['stages']['stage_b']} updates of "
        f"{plan['batch_size']} in every arm after stage A's {plan['stages']['stage_a']}. The paper: {PAPER}. "
        f"Wall {result['wall_s'] / 60:.1f} min (learning {result['learning_s'] / 60:.1f})."
    )
    return markdown_table(header, rows) + "\n\n" + "\n".join(lines) + "\n\n" + note


def _cells(arm: dict[str, Any]) -> list[str]:
    return [pct_ci(arm["seen"]["accuracy"]), pct_ci(arm["unseen"]["accuracy"])]


def _points(figure: dict[str, Any]) -> str:
    low, high = figure["ci95"]
    return f"{figure['value']:+.1f} [{low:+.1f}, {high:+.1f}]"


def main(argv: list[str] | None = None) -> int:
    return run_tuned_benchmark(
        "yoda_mini", __doc__ or "", "a short stage A and B, 1 seed (about 3 minutes)", run, table, argv
    )


if __name__ == "__main__":
    sys.exit(main())
