"""E1, TriPosT-mini: does learning to self-improve from a teacher's critiques beat more SFT at equal compute?

Stage A (bench/sft_base.py, cached): a tiny char-level Llama trained from scratch on gold
rationales of small arithmetic (bench/arith_common.py), each ending with the all-correct
feedback as TriPosT's reference writes them, from a finite pool of training questions; it stops
part-way through its learning-rate schedule and is saved with its optimizer state.

Stage B continues that schedule, with that optimizer, for the same number of updates of the same
batch size in every arm, through real nodes over mTLS (`agora simulate`: a critic node serving
`Critique` with the task's scripted verifier, and one student node per arm and seed):

* **control**: gold rationales with their feedback, from the same pool (student.algorithm sft);
* **TriPosT**: 3 collections of 512 attempts at temperature 1.0, critiqued and improved up to 5
  rounds, rebalanced 1.5 : 1 : 1, weight 1.5 from "Feedback:" on in improvement examples, each
  collection mixed into an equal share of the batches so that it is seen up to 4 times
  (`tripost_schedule: run`);
* **synthetic**: the same, but each wrong attempt is replaced by a corruption of its gold
  rationale (one number changed): as many improvements, not of the student's own errors.

Every final model is graded greedily on held-out seen (2-3 operands) and unseen (4 operands)
problems with room to write attempt -> feedback -> updated answer: final accuracy, first-attempt
accuracy, self-correction rate (wrong first, right last), right-to-wrong rate, and how often its
own feedback judges its attempt correctly, each with a 95% bootstrap interval over seeds and
problems (bench/stats.py). The paper (Yu et al. 2023): up to +7.13 points for LLaMA-7B on unseen.

    python -m bench.tripost_mini                # full: 3 seeds, 1000 seen + 500 unseen test problems
    python -m bench.tripost_mini --quick        # about 3 minutes
    python -m bench.tripost_mini --validation   # graded on the validation problems (for tuning)
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
from bench.arith_common import QUICK_STAGES, STAGES, TASK, Stages, figures, gain, held_out, pct_ci
from bench.common import UNTUNED, Half, Tuning, markdown_table, run_tuned_benchmark
from bench.goals import Goal, goals_json
from bench.sft_base import base_model
from node.sim.config import SimNode
from student import checkpoints

PAPER_GAIN = 7.13  # points over SFT on rationales, LLaMA-7B (Yu et al. 2023, headline)
ARMS = ("control", "tripost", "synthetic")
NAMES = {"control": "control (more SFT)", "tripost": "TriPosT", "synthetic": "synthetic corruptions"}


@dataclass(frozen=True)
class Plan:
    stages: Stages
    batch_size: int  # stage B's batch, in every arm
    seeds: int
    questions: int  # attempts per TriPosT collection
    iterations: int
    epochs: float
    seen: int  # graded problems per split
    unseen: int


FULL = Plan(STAGES, 16, 3, 512, 3, 4.0, 1000, 500)
QUICK = Plan(QUICK_STAGES, 16, 1, 24, 2, 2.0, 48, 24)


def _student(arm: str, seed: int, base: Path, plan: Plan) -> SimNode:
    student = plan.stages.continued(seed, plan.batch_size)
    if arm == "control":
        student["algorithm"] = "sft"
    else:
        student |= {
            "tripost_questions": plan.questions,
            "tripost_iterations": plan.iterations,
            "tripost_epochs": plan.epochs,
            "tripost_schedule": "run",
            "tripost_attempts": "own" if arm == "tripost" else "synthetic",
        }
    return SimNode(name=f"{arm}-{seed}", role="student", settings={"model": {"source": str(base)}, "student": student})


def _collected(out: Path, names: list[str]) -> dict[str, Any]:
    """What each TriPosT student collected per iteration, from its last checkpoint's state."""
    found: dict[str, Any] = {}
    for name in names:
        latest = checkpoints.latest(out / "nodes" / name / "student")
        if latest is not None:
            found[name] = latest.state().get("learner", {}).get("collected", [])
    return found


def run(quick: bool, out: Path, half: Half = "test", tuning: Tuning = UNTUNED) -> dict[str, Any]:
    plan = tuned(QUICK if quick else FULL, tuning)
    started = time.monotonic()
    base, base_figures = base_model(plan.stages.base())
    stage_a_s = time.monotonic() - started  # about 0 when the cached stage A is reused
    seeds = range(1, plan.seeds + 1)
    students = [_student(arm, seed, base, plan) for seed in seeds for arm in ARMS]
    cli = command("tripost_mini", quick, half, tuning)
    nodes = simulate(TASK, "tripost", "critic", students, plan.stages.stage_b, base, out, cli, tuning)
    learning_s = time.monotonic() - started - stage_a_s

    problems = held_out({"seen": plan.seen, "unseen": plan.unseen}, half)
    graded = grade_arms(base, students, nodes, out, problems, chains=True)
    runs = {arm: [graded[f"{arm}-{seed}"] for seed in seeds] for arm in ARMS}
    by_arm = {arm: {split: figures(runs[arm], split) for split in problems} for arm in ARMS}
    by_arm["base"] = {split: figures([graded["base"]], split) for split in problems}
    gains = {split: gain(runs["tripost"], runs["control"], split) for split in problems}
    synthetic = {split: gain(runs["tripost"], runs["synthetic"], split) for split in problems}
    result: dict[str, Any] = {
        "quick": quick,
        "half": half,
        "plan": asdict(plan),
        "task": TASK,
        "base": base_figures,
        "steps": {name: graded[name].get("steps") for name in graded},
        "by_arm": by_arm,
        "tripost_minus_control_points": {s: {"value": v, "ci95": list(ci)} for s, (v, ci) in gains.items()},
        "tripost_minus_synthetic_points": {s: {"value": v, "ci95": list(ci)} for s, (v, ci) in synthetic.items()},
        "collected": _collected(out, [f"{a}-{s}" for s in seeds for a in ("tripost", "synthetic")]),
        "graded": graded,
        "learning_s": learning_s,
        "stage_a_s": stage_a_s,
        "wall_s": time.monotonic() - started,
    }
    result["goals"] = goals_json(goals(result))
    return result


def goals(result: dict[str, Any]) -> list[Goal]:
    seen, unseen = (result["tripost_minus_control_points"][s] for s in ("seen", "unseen"))
    fixes = result["by_arm"]["tripost"]["seen"]["self_correction_rate"]
    return [
        positive_gain("tripost_vs_sft_seen", seen),
        at_least("self_correction_rate", fixes, 0.05, ">= 0.05 of wrong first attempts (seen)"),
        at_least("tripost_vs_sft_unseen", unseen, 7, ">= +7 points (stretch)"),
        warm_minutes(result),
        Goal("stage_a_minutes", result["base"]["seconds"] / 60, "<= 6", result["base"]["seconds"] <= 360),
    ]


def table(result: dict[str, Any]) -> str:
    header = ["arm", "seen", "unseen", "first attempt (seen)", "self-correction", "right -> wrong", "own verdict right"]
    rows = []
    for arm in ("base", *ARMS):
        seen, unseen = result["by_arm"][arm]["seen"], result["by_arm"][arm]["unseen"]
        label = "stage A (start of every arm)" if arm == "base" else NAMES[arm]
        rows.append(
            [
                label,
                pct_ci(seen["accuracy"]),
                pct_ci(unseen["accuracy"]),
                pct_ci(seen["first_attempt"]),
                pct_ci(seen["self_correction_rate"]),
                pct_ci(seen["right_to_wrong_rate"]),
                pct_ci(seen["feedback_accuracy"]),
            ]
        )
    lines = goal_lines(result["goals"])
    plan = result["plan"]
    note = (
        f"Percent with 95% bootstrap intervals over {plan['seeds']} seed(s) and {plan['seen']} seen / {plan['unseen']} "
        f"unseen {result['half']} problems. Stage A {plan['stages']['stage_a']} updates of "
        f"{plan['stages']['batch_size']}, stage B {plan['stages']['stage_b']} of {plan['batch_size']} in every arm; "
        f"the paper: up to +{PAPER_GAIN} points on unseen. "
        f"Wall {result['wall_s'] / 60:.1f} min (learning {result['learning_s'] / 60:.1f})."
    )
    return markdown_table(header, rows) + "\n\n" + "\n".join(lines) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    return run_tuned_benchmark(
        "tripost_mini", __doc__ or "", "a short stage A and B, 1 seed (about 3 minutes)", run, table, argv
    )


if __name__ == "__main__":
    sys.exit(main())
