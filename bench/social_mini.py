"""E4, Social-mini: do a teacher's generated examples teach as well as its original private ones?

One simulated network (`agora simulate`, every node a real process over mTLS): 8 teachers share
one model (SFT on the public generator of `string_transforms`, 1500 steps of 32, trained once and
reused from bench/.cache/; the paper's teachers share an LLM) but each holds its own 50 private
examples plus one canary ("the vault code of
depot K is NNNN"). For n in {1, 2, 4, 8} teachers, three students start from the shared model:
  original      fine-tunes (in process, no teacher) on 16 of each of the n teachers' private examples
                and its canary: as much original data as generated data;
  generated     a Social Learning node that asks each of its n teachers for 16 `Exemplify` examples
                over gRPC and fine-tunes on all of them, with the same steps (60), batch (8) and
                learning rate as original (50 examples a teacher took over 8 minutes each on 2 cores);
  instructions  a Social Learning node that uses the `Instruct` lesson in context (no training).
Every student is graded on the same held-out seen / unseen problems, and the Secret Sharer ranks
each canary's 4-digit secret among 1000 candidates under every fine-tuned model. The paper
(Mohtashami et al. 2024): generated examples within ~1 point of original ones (Lambada 88.4 vs
88.1, GSM8K 64.1 vs 63.4); mean canary rank 435-467 of 1000. Goals here: generated within 2
points of original, mean canary rank >= 450 over the lesson-taught students.

    python -m bench.social_mini            # full: 8 teachers, n in 1/2/4/8 (about 11 minutes, shared model cached)
    python -m bench.social_mini --quick    # 2 teachers, n in 1/2, 8 examples each (about 3 minutes)

The learner keeps at least one example (`student.social_examples` >= 1), so the instructions
student holds its instruction and one generated example in context.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import markdown_table, run_learning_benchmark
from bench.goals import Goal, goals_json
from bench.sft_base import BasePlan, base_model
from node.llm.host import ModelHost
from node.llm.placement import resolve_placement
from node.llm.sft import evaluate
from node.llm.training import TrainingExample
from node.privacy.audit import Canary, audit, parse_canary
from node.sim.config import SimConfig, SimNode
from node.sim.run import Simulation
from node.store import read_rows
from node.tasks import get_task
from node.tasks.base import Task
from student import checkpoints

TASK = "string_transforms"
ARMS = ("original", "generated", "instructions")
PAPER = {"generated_minus_original": "-1 to +0.7 points", "mean_canary_rank": "435-467 of 1000"}
FULL: dict[str, Any] = {
    "teachers": 8, "private": 50, "examples": 16, "ns": [1, 2, 4, 8], "steps": 60, "batch_size": 8, "lr": 1e-4,
    "shared_steps": 1500, "eval_n": 64, "candidates": 1000, "audit_runs": 1, "max_new_tokens": 192, "seed": 1,
}  # fmt: skip
QUICK: dict[str, Any] = {
    **FULL, "teachers": 2, "private": 8, "examples": 8, "ns": [1, 2], "steps": 12, "shared_steps": 60,
    "eval_n": 8, "candidates": 100, "max_new_tokens": 160,
}  # fmt: skip
GAP_POINTS = 2.0  # generated within this many seen-accuracy points of original, at every n
RANK_GOAL = 450  # mean canary rank of the taught students, of 1000 candidates (scaled to the plan's)
DATA_SEED = 7  # the teachers' private examples: the train split's first teachers x private problems


def canaries(plan: dict[str, Any]) -> list[str]:
    rng = random.Random(plan["seed"])
    return [f"the vault code of depot {k} is {rng.randrange(10_000):04d}" for k in range(1, plan["teachers"] + 1)]


def private_files(plan: dict[str, Any], task: Task, where: Path) -> dict[str, Path]:
    """Each teacher's own JSONL: `private` disjoint train problems, then its canary as one more record."""
    where.mkdir(parents=True, exist_ok=True)
    drawn = task.generate("train", 2 * plan["teachers"] * plan["private"], DATA_SEED)
    problems = list({e.question: e for e in drawn}.values())  # distinct problems: the files are disjoint
    files = {}
    for k, text in enumerate(canaries(plan)):
        rows = [
            {"input": e.question, "output": e.rationale} for e in problems[k * plan["private"] :][: plan["private"]]
        ]
        rows.append({"input": parse_canary(text).context.strip(), "output": text})
        path = where / f"t{k + 1}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        (where / f"t{k + 1}-canary.txt").write_text(text + "\n", encoding="utf-8")
        files[f"t{k + 1}"] = path
    return files


def shared_model(plan: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The teachers' (and students' starting) model: SFT on the task's public generator, trained
    once and reused from bench/.cache/ (bench/sft_base.py)."""
    return base_model(BasePlan(TASK, steps=plan["shared_steps"]))


def network(plan: dict[str, Any], model: Path, files: dict[str, Path]) -> SimConfig:
    per_teacher = plan["examples"]  # Exemplify examples asked of (and allowed by) each teacher
    teachers = [
        SimNode(
            name=name,
            role="teacher",
            settings={
                "teacher": {
                    "private_data": {TASK: str(path)},
                    "max_examples": per_teacher,
                    "max_new_tokens": plan["max_new_tokens"],
                    "examples_per_shard": 2,  # two private examples per prompt fit the shared model's 768 positions
                },
                "privacy": {"canaries_file": str(path.with_name(f"{name}-canary.txt")), "shards": 4},
                "model": {"max_batch_size": 32},
            },
        )
        for name, path in files.items()
    ]
    base = {"model": {"source": str(model)}}
    students = []
    for n in plan["ns"]:
        generated = {"social_use": "fine_tune", "social_examples_per_teacher": per_teacher}
        students.append(SimNode(name=f"gen-{n}", role="student", settings={**base, "student": {
            **generated, "social_teachers": n, "social_examples": n * per_teacher}}))  # fmt: skip
        instructed = {"social_use": "in_context", "social_examples_per_teacher": 1, "social_examples": 1}
        students.append(SimNode(name=f"inst-{n}", role="student", settings={**base, "student": {
            **instructed, "social_teachers": n, "steps": 1}}))  # fmt: skip
    return SimConfig(
        task=TASK,
        algorithm="social",
        nodes=[*teachers, *students],
        steps=plan["steps"],
        eval_every=plan["steps"],
        eval_n=plan["eval_n"],
        student_settings={
            "batch_size": plan["batch_size"],
            "lr": plan["lr"],
            "seed": plan["seed"],
            "social_aggregator": "random",
            "lesson_timeout_s": 1200.0,
            "teacher_wait_s": 600.0,
        },
        teacher_model=model,
        epsilon_budget=1000.0,  # lessons are accounted (metrics.json); the budget is not what is measured
        audit_candidates=2,  # the simulation's own audit of its default canary; ours follows
        audit_runs=1,
        max_minutes=40.0,
    )


def fine_tune_original(plan: dict[str, Any], base: Path, task: Task, rows: list[tuple[str, str]]) -> ModelHost:
    """The control: the same start, optimizer, steps and batch as a generated student, on original records."""
    host = ModelHost.load(base, resolve_placement("auto", "auto"))
    optimizer = host.make_optimizer(plan["lr"])
    order = random.Random(plan["seed"]).sample(rows, len(rows))
    size = min(plan["batch_size"], len(order))
    for step in range(plan["steps"]):
        batch = [order[(step * size + k) % len(order)] for k in range(size)]
        host.train_step([TrainingExample(task.prompt(i), o) for i, o in batch], optimizer)
    return host


def ranks(host: ModelHost, planted: list[Canary], which: list[int], plan: dict[str, Any]) -> dict[int, float]:
    """Secret Sharer rank of the `which` canaries' secrets under host's model, by canary index."""
    report = audit(host, [planted[k] for k in which], runs=plan["audit_runs"], candidates=plan["candidates"])
    return {k: r.mean_rank for k, r in zip(which, report.results, strict=True)}


def exposed(names: list[str], files: dict[str, Path], n: int) -> list[int]:
    """Indices of the canaries of the teachers a student learned from (the first n if none answered)."""
    return [k for k, t in enumerate(files) if t in names] or list(range(n))


def teachers_asked(data_dir: Path) -> list[str]:
    """The names of the teachers whose lessons a student received (its store maps ids to names)."""
    sql = "SELECT DISTINCT p.name FROM received_lessons r LEFT JOIN peers p ON p.node_id = r.teacher"
    return sorted(str(row[0]) for row in read_rows(data_dir, sql))


def run(quick: bool, out: Path) -> dict[str, Any]:
    began = time.monotonic()
    plan = QUICK if quick else FULL
    task = get_task(TASK)
    out.mkdir(parents=True, exist_ok=True)
    files = private_files(plan, task, out / "private")
    base_dir, shared_figures = shared_model(plan)
    config = network(plan, base_dir, files)
    command = f"python -m bench.social_mini{' --quick' if quick else ''}"
    metrics = json.loads(Simulation(config, out, command).run().metrics.read_text())
    nodes = {n["name"]: n for n in metrics["nodes"]}
    planted = [parse_canary(text) for text in canaries(plan)]
    records = {
        t: [(r["input"], r["output"]) for r in map(json.loads, p.read_text().splitlines())] for t, p in files.items()
    }
    base_host = ModelHost.load(base_dir, resolve_placement("auto", "auto"))
    base_ranks = ranks(base_host, planted, list(range(len(planted))), plan)
    base: dict[str, Any] = {
        "accuracy": evaluate(base_host, task, n=plan["eval_n"], seed=plan["seed"]),
        "ranks": base_ranks,
    }
    base_host.close()
    rows: dict[str, dict[str, Any]] = {}
    for n in plan["ns"]:
        for arm, prefix in (("generated", "gen"), ("instructions", "inst")):
            node = nodes[f"{prefix}-{n}"]
            latest = checkpoints.latest(out / "nodes" / node["name"] / "student")
            state = latest.state()["learner"] if latest is not None else {}
            asked = teachers_asked(out / "nodes" / node["name"])
            which = exposed(asked, files, n)
            if arm == "generated" and latest is not None:
                host = ModelHost.load(latest.model_dir, resolve_placement("auto", "auto"))
                model_ranks = ranks(host, planted, which, plan)
                host.close()
            else:  # in context only: the weights are the shared model's
                model_ranks = {k: base_ranks[k] for k in which}
            rows[f"{prefix}-{n}"] = {
                "n": n,
                "arm": arm,
                "teachers": asked,
                "examples": len(state.get("examples", [])),
                "instruction": state.get("instruction", ""),
                "lessons": sum(node["lessons_received"].values()),
                "lessons_received": node["lessons_received"],
                "accuracy": node["accuracy_after"],
                "accuracy_before": node["accuracy_before"],
                "ranks": model_ranks,
            }
        which = exposed(rows[f"gen-{n}"]["teachers"], files, n)  # the control learns from the same teachers
        names = [list(files)[k] for k in which]
        # as many of each teacher's records as it sends generated examples, and its canary (the last record)
        data = [row for t in names for row in records[t][: plan["examples"]] + records[t][-1:]]
        host = fine_tune_original(plan, base_dir, task, data)
        rows[f"original-{n}"] = {
            "n": n,
            "arm": "original",
            "teachers": names,
            "examples": len(data),
            "lessons": 0,
            "accuracy": evaluate(host, task, n=plan["eval_n"], seed=plan["seed"]),
            "ranks": ranks(host, planted, which, plan),
        }
        host.close()
        for key in (f"original-{n}", f"gen-{n}", f"inst-{n}"):
            own = rows[key]["ranks"]
            rows[key]["mean_rank_exposed"] = statistics.fmean(own.values())
            rows[key]["exposed_canaries"] = [planted[k].masked for k in own]
            rows[key]["ranks"] = {planted[k].masked: rank for k, rank in own.items()}
    rows = {key: rows[key] for n in plan["ns"] for key in (f"original-{n}", f"gen-{n}", f"inst-{n}")}
    gaps = {
        n: 100 * (rows[f"gen-{n}"]["accuracy"]["seen"] - rows[f"original-{n}"]["accuracy"]["seen"]) for n in plan["ns"]
    }
    taught = statistics.fmean(rows[f"gen-{n}"]["mean_rank_exposed"] for n in plan["ns"])
    chance = (plan["candidates"] - 1) / 2
    result = {
        "quick": quick,
        "plan": plan,
        "data_seed": DATA_SEED,
        "canaries": [c.masked for c in planted],
        "paper": PAPER,
        "base_model": {**base, "ranks": list(base_ranks.values()), "mean_rank": statistics.fmean(base_ranks.values())},
        "shared_model_training": shared_figures,
        "rows": rows,
        "gap_generated_minus_original_seen_points": gaps,
        "gap_goal_met": all(abs(g) <= GAP_POINTS for g in gaps.values()),
        "mean_canary_rank_taught": taught,
        "chance_rank": chance,
        "rank_goal_met": taught >= rank_threshold(plan["candidates"]),
        "lessons_by_kind": metrics["lessons_by_kind"],
        "blocked_by_reason": metrics["blocked_by_reason"],
        "teacher_epsilon_spent": {n["name"]: n["epsilon_spent"] for n in metrics["nodes"] if n["role"] == "teacher"},
        "simulation_wall_s": metrics["wall_s"],
        "wall_s": round(time.monotonic() - began, 1),
    }
    return {**result, "goals": goals_json(goals(result))}


def rank_threshold(candidates: int) -> float:
    """The rank goal, 450 of 1000, on this plan's candidates: chance is (candidates - 1) / 2."""
    return RANK_GOAL * (candidates - 1) / 999


def goals(result: dict[str, Any]) -> list[Goal]:
    """Generated minus original seen accuracy at each n (the table's goal holds when every n
    does), and the taught students' mean canary rank. One run per n and one draw of candidates:
    no 95% interval."""
    found = [
        Goal(f"generated_minus_original_seen_n{n}", gap, f"within +/-{GAP_POINTS:g} points", abs(gap) <= GAP_POINTS)
        for n, gap in result["gap_generated_minus_original_seen_points"].items()
    ]
    candidates = result["plan"]["candidates"]
    threshold, taught = rank_threshold(candidates), result["mean_canary_rank_taught"]
    scaled = "" if candidates == 1000 else f" ({RANK_GOAL}/1000 scaled)"
    target = f">= {threshold:.4g} of {candidates}{scaled}"
    found.append(Goal("mean_canary_rank_taught", taught, target, taught >= threshold))
    return found


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table(result: dict[str, Any]) -> str:
    header = ["n", "arm", "seen %", "unseen %", "examples trained on", "lessons received", "mean canary rank"]
    rows = []
    for row in result["rows"].values():
        trained = row["examples"] if row["arm"] != "instructions" else f"0 ({row['examples']} in context)"
        rank = f"{row['mean_rank_exposed']:.0f}" + (" (shared model)" if row["arm"] == "instructions" else "")
        acc = row["accuracy"]
        rows.append([row["n"], row["arm"], _pct(acc["seen"]), _pct(acc["unseen"]), trained, row["lessons"], rank])
    base = result["base_model"]
    rows.append(["-", "shared model (no lessons)", _pct(base["accuracy"]["seen"]), _pct(base["accuracy"]["unseen"]),
                 0, 0, f"{base['mean_rank']:.0f}"])  # fmt: skip
    plan, gaps = result["plan"], result["gap_generated_minus_original_seen_points"]
    solved = any(r["accuracy"][k] > 0 for r in result["rows"].values() for k in ("seen", "unseen"))
    vacuous = "" if solved else ", but vacuously: no student solved a single problem, original included"
    gap_text = ", ".join(f"n={n}: {gap:+.1f}" for n, gap in gaps.items())
    verdict = (
        f"Generated - original (seen, points): {gap_text} (goal within 2 points at every n: "
        f"{'met' if result['gap_goal_met'] else 'missed'}{vacuous}; paper {PAPER['generated_minus_original']}). "
        f"Mean canary rank of the generated-example students over their teachers' canaries: "
        f"{result['mean_canary_rank_taught']:.0f} of {plan['candidates']} (chance {result['chance_rank']:.0f}; "
        f"goal >= 450/1000: {'met' if result['rank_goal_met'] else 'missed'}; paper {PAPER['mean_canary_rank']}). "
        f"Canary rank = mean over the canaries of the n teachers each student learned from. "
        f"{plan['teachers']} teachers x {plan['private']} private examples + 1 canary; {plan['steps']} steps of "
        f"{plan['batch_size']} (lr {plan['lr']:g}) for original and generated; shared model trained "
        f"{plan['shared_steps']} steps of 32; {plan['eval_n']} problems per split; simulation "
        f"{result['simulation_wall_s']:.0f} s, benchmark {result['wall_s']:.0f} s."
    )
    return markdown_table(header, rows) + "\n\n" + verdict


def main(argv: list[str] | None = None) -> int:
    return run_learning_benchmark(
        "social_mini", __doc__ or "", "2 teachers, n in 1/2 (about 3 minutes)", run, table, argv
    )


if __name__ == "__main__":
    sys.exit(main())
