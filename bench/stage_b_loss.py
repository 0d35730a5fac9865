"""What E1's and E2's stage B asks stage A to learn: stage A's per-token loss on each kind of text.

A diagnostic of E1 and E2 (bench/tripost_mini.py, bench/yoda_mini.py), run on stage A's cached
model (bench/arith_common.py): the mean per-token loss, with a 95% bootstrap interval over
examples, of

* gold rationales with the all-correct feedback, from stage A's own pool (what the control trains on);
* gold rationales of the questions a teacher's `Pose` makes from them: generalized (same shape,
  new numbers) and harder (one operand more), E2's expanded set;
* TriPosT improvement examples (a wrong attempt, the critic's feedback, the updated answer and its
  all-correct feedback): the attempt alone, and the feedback and update alone.

Text that stage A already predicts (loss near 0) moves its weights little; text it has never
seen carries gradients as many times larger, and at 0.42M parameters those updates overwrite the
arithmetic the accuracy measures. The wrong attempts here are corruptions of gold rationales
(one number changed), as E1's synthetic arm makes them; no teacher node is needed, since the
critic's feedback is the task's scripted verifier in both.

    python -m bench.stage_b_loss            # 256 questions, stage A as E1 and E2 use it
    python -m bench.stage_b_loss --quick    # 32 questions of the quick stage A
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from bench.arith_common import QUICK_STAGES, STAGES, TASK
from bench.common import finish, markdown_table
from bench.goals import Goal, goals_json
from bench.sft_base import base_model, corrected
from bench.stats import as_matrix, mean_ci
from node.llm import ModelHost, resolve_placement
from node.llm.training import TrainingExample
from node.tasks import get_task
from node.tasks.base import ALL_CORRECT, gold_target
from student.learner import feedback_target

KINDS = {
    "gold": "gold rationale + all-correct feedback (stage A's own pool)",
    "posed_generalized": "gold of a posed generalized question (E2)",
    "posed_harder": "gold of a posed harder question (E2)",
    "improvement_attempt": "improvement example: the wrong attempt (E1)",
    "improvement_feedback": "improvement example: feedback + updated answer (E1)",
}


def examples(questions: int, seed: int = 0) -> dict[str, list[TrainingExample]]:
    """Each kind of stage-B text, built from the same pool questions."""
    task, rng = get_task(TASK), random.Random(seed)
    made: dict[str, list[TrainingExample]] = {kind: [] for kind in KINDS}
    for example in task.generate("train", questions, seed):
        prompt = task.prompt(example.question)
        made["gold"].append(TrainingExample(prompt, gold_target(example.rationale, True)))
        for text, level in task.pose(example.question, 1, 1, seed=rng.randrange(1 << 30)) or []:
            posed = task.solve(text)
            if posed is not None:
                kind = "posed_harder" if level else "posed_generalized"
                made[kind].append(TrainingExample(task.prompt(posed.question), gold_target(posed.rationale, True)))
        pair = corrected(task, example, rng)
        if pair is None:
            continue
        attempt, rounds = pair
        for kind, weights in (("improvement_attempt", (0.0, 1.0)), ("improvement_feedback", (1.0, 0.0))):
            target = feedback_target(attempt, rounds, ALL_CORRECT, *weights)
            made[kind].append(TrainingExample(prompt, target))
    return made


def losses(host: ModelHost, batch: Sequence[TrainingExample]) -> list[float]:
    """Per-token loss of each example (its weighted tokens only)."""
    with torch.inference_mode():
        return [float(host.forward_loss([example]).item()) for example in batch]


def run(quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    stages = QUICK_STAGES if quick else STAGES
    base, _ = base_model(stages.base())
    host = ModelHost.load(base, resolve_placement("auto", "auto"))
    host.model.eval()
    by_kind: dict[str, Any] = {}
    for kind, batch in examples(32 if quick else 256).items():
        value, ci = mean_ci(as_matrix([losses(host, batch)]))
        by_kind[kind] = {"loss": value, "ci95": list(ci), "n": len(batch)}
    host.close()
    gold = by_kind["gold"]["loss"]
    result: dict[str, Any] = {
        "quick": quick,
        "task": TASK,
        "stage_a": stages.stage_a,
        "by_kind": by_kind,
        "ratio_to_gold": {kind: figure["loss"] / gold for kind, figure in by_kind.items()},
        "wall_s": time.monotonic() - started,
    }
    result["goals"] = goals_json(goals(result))
    return result


def goals(result: dict[str, Any]) -> list[Goal]:
    """Measurements, not targets: each kind's loss, recorded with its interval."""
    return [
        Goal(f"loss_{kind}", figure["loss"], "recorded (no target)", True, tuple(figure["ci95"]))
        for kind, figure in result["by_kind"].items()
    ]


def table(result: dict[str, Any]) -> str:
    rows = [
        [
            KINDS[kind],
            figure["n"],
            f"{figure['loss']:.3f} [{figure['ci95'][0]:.3f}, {figure['ci95'][1]:.3f}]",
            f"{result['ratio_to_gold'][kind]:.0f}x",
        ]
        for kind, figure in result["by_kind"].items()
    ]
    note = f"Stage A after {result['stage_a']} updates; 95% bootstrap intervals over examples."
    return markdown_table(["text", "examples", "loss per token", "vs gold"], rows) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage_b_loss", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 questions of the quick stage A")
    args = parser.parse_args(argv)
    return finish(f"stage_b_loss{'-quick' if args.quick else ''}", run(args.quick), table)


if __name__ == "__main__":
    sys.exit(main())
