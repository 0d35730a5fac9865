"""E3, TnD-mini: does learning from a teacher's demonstrations and rewards speed up word learning?

One simulated network (`agora simulate`, every node a real process over mTLS): a teacher trained
from scratch on the child-directed corpus with log-spaced checkpoints, its age predictor R_phi
(held-out Pearson r reported), and students in four modes, each from 3 seeds: CLM only (no
teacher), TnD (trials and demonstrations), trial-only and demo-only. Every student evaluates
word surprisal on the task's test words at each evaluation; `agora tnd report`'s fits give
nAoA@0.5, nAoA@[.5:.95] and the effective vocabulary. The paper (Ma, Wang & Chai 2024): mean
nAoA@0.5 2.94 for CLM, 2.60 demo-only, 2.10 TnD. Goal here: TnD <= CLM - 0.5.

    python -m bench.tnd_mini            # full: 3 seeds x 4 modes, 400 steps (about 16 minutes on 2 cores)
    python -m bench.tnd_mini --quick    # 1 seed x 4 modes, 120 steps (about 3 minutes)

Students own an unlimited corpus (a fresh batch every step, as in the paper) and see 2-word
prompts: the corpus's sentences are 3-8 words, so 5-token prompts leave nothing to demonstrate.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from scipy import stats

from bench.common import markdown_table, run_learning_benchmark
from bench.goals import Goal, goals_json
from node.sim.config import SimConfig, SimNode
from node.sim.run import Simulation
from student.tnd_report import ReportSummary, write_report

MODES = ("clm_only", "tnd", "trial_only", "demo_only")
PAPER_NAOA = {"clm_only": 2.94, "demo_only": 2.60, "tnd": 2.10}  # mean nAoA@0.5, the paper's table
GOAL_GAP = 0.5  # CLM nAoA@0.5 minus TnD's, log10 steps
FULL = {"seeds": 3, "steps": 400, "eval_every": 20, "teacher_steps": 1500, "reward_steps": 600, "probe": 2}
QUICK = {"seeds": 1, "steps": 120, "eval_every": 10, "teacher_steps": 300, "reward_steps": 150, "probe": 2}


def network(plan: dict[str, int]) -> SimConfig:
    students = [
        SimNode(
            name=f"{mode.replace('_', '-')}-{seed}",
            role="student",
            settings={"student": {"tnd_mode": mode, "seed": seed}},
        )
        for seed in range(1, plan["seeds"] + 1)
        for mode in MODES
    ]
    return SimConfig(
        task="word_learning",
        algorithm="tnd",
        nodes=[SimNode(name="tutor", role="teacher"), *students],
        steps=plan["steps"],
        eval_every=plan["eval_every"],
        eval_n=32,
        student_settings={"tnd_corpus": 0, "tnd_prompt_tokens": 2, "tnd_probe_contexts": plan["probe"]},
        teacher_steps=plan["teacher_steps"],
        reward_steps=plan["reward_steps"],
        audit_candidates=20,
        audit_runs=1,
    )


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _spread(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.stdev(present) if len(present) > 1 else None


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}".removesuffix(".0")


def _fmt(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")


def _figures(summary: ReportSummary) -> dict[str, Any]:
    return {key: value for key, value in vars(summary).items() if not key.endswith("_path")}


def run(quick: bool, out: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    config = network(plan)
    files = Simulation(config, out, f"python -m bench.tnd_mini{' --quick' if quick else ''}").run()
    metrics = json.loads(files.metrics.read_text())
    summaries: dict[str, ReportSummary] = {}
    for node in config.node_list():
        if node.role == "student":
            run_dir = out / "nodes" / node.name / "student" / "tnd"
            summaries[node.name] = write_report(run_dir, out / "word-reports" / node.name)
    reward = json.loads((out / "models" / "reward" / "age_predictor.json").read_text())
    by_mode: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        runs = [s for name, s in summaries.items() if name.startswith(mode.replace("_", "-") + "-")]
        naoa = [s.mean_naoa for s in runs]
        by_mode[mode] = {
            "runs": len(runs),
            "mean_naoa": _mean(naoa),
            "std_naoa": _spread(naoa),
            "mean_naoa_range": _mean([s.mean_naoa_range for s in runs]),
            "words_with_naoa": _mean([float(s.words_with_naoa) for s in runs]),
            "words": runs[0].words if runs else 0,
            "effective_vocabulary": _mean([float(s.effective_vocabulary) for s in runs]),
            "paper_mean_naoa": PAPER_NAOA.get(mode),
        }
    clm, tnd = by_mode["clm_only"]["mean_naoa"], by_mode["tnd"]["mean_naoa"]
    gap = None if clm is None or tnd is None else clm - tnd
    result = {
        "quick": quick,
        "plan": plan,
        "age_predictor_pearson_r": reward["pearson_r"],
        "by_mode": by_mode,
        "per_run": {name: _figures(summary) for name, summary in summaries.items()},
        "clm_minus_tnd": gap,
        "goal_met": gap is not None and gap >= GOAL_GAP,
        "simulation_wall_s": metrics["wall_s"],
    }
    return {**result, "goals": goals_json(goals(result))}


def seed_gaps(per_run: dict[str, dict[str, Any]]) -> list[float]:
    """CLM minus TnD nAoA@0.5 for each seed that both modes ran to an nAoA: the seeds are paired
    (a seed fixes a student's batches and sampling seeds in every mode)."""
    naoa = {(r["mode"], r["seed"]): r["mean_naoa"] for r in per_run.values() if r["mean_naoa"] is not None}
    seeds = sorted({seed for _, seed in naoa})
    return [naoa["clm_only", s] - naoa["tnd", s] for s in seeds if ("clm_only", s) in naoa and ("tnd", s) in naoa]


def t_ci95(values: list[float]) -> tuple[float, float] | None:
    """Student-t 95% interval for the mean of `values` (None with fewer than 2)."""
    if len(values) < 2:
        return None
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5
    mean = statistics.fmean(values)
    return (mean - half, mean + half)


def goals(result: dict[str, Any]) -> list[Goal]:
    """The one judged figure, CLM minus TnD mean nAoA@0.5, with a paired t-interval over seeds."""
    gap = result["clm_minus_tnd"]
    met = gap is not None and gap >= GOAL_GAP
    target = f">= {GOAL_GAP:g} log10 steps (ci95: paired t over seeds)"
    return [Goal("clm_minus_tnd_naoa", gap, target, met, t_ci95(seed_gaps(result["per_run"])))]


def table(result: dict[str, Any]) -> str:
    rows = [
        [
            mode,
            m["runs"],
            _fmt(m["mean_naoa"], m["std_naoa"]),
            _fmt(m["mean_naoa_range"]),
            f"{_count(m['words_with_naoa'])}/{m['words']}",
            _count(m["effective_vocabulary"]),
            _fmt(m["paper_mean_naoa"]),
        ]
        for mode, m in result["by_mode"].items()
    ]
    header = ["mode", "seeds", "nAoA@0.5", "nAoA@[.5:.95]", "words with one", "effective vocabulary", "paper nAoA@0.5"]
    gap = result["clm_minus_tnd"]
    verdict = (
        f"CLM - TnD = {_fmt(gap)} (goal >= 0.5: {'met' if result['goal_met'] else 'missed'}); "
        f"R_phi held-out Pearson r = {result['age_predictor_pearson_r']:.3f}; "
        f"{result['plan']['steps']} steps per student, simulation {result['simulation_wall_s']:.0f} s."
    )
    return markdown_table(header, rows) + "\n\n" + verdict


def main(argv: list[str] | None = None) -> int:
    quick = "1 seed, 120 steps (about 3 minutes)"
    return run_learning_benchmark("tnd_mini", __doc__ or "", quick, run, table, argv)


if __name__ == "__main__":
    sys.exit(main())
