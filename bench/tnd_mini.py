"""E3, TnD-mini: do a teacher's demonstrations and rewards speed up a data-limited student's word learning?

One simulated network (`agora simulate`, every node a real process over mTLS): a teacher trained
from scratch on the child-directed corpus with log-spaced checkpoints and its age predictor R_phi
(both cached in bench/.cache/, held-out Pearson r reported), and students in six arms from the same
start, each from 3 seeds (a seed fixes a student's batches and sampling in every arm):

    clm_only     CLM steps only, on the student's own corpus
    tnd          trials and demonstrations, PPO and their CLM update (the paper)
    double_clm   the same trials and demonstrations and their CLM update, no reward and no PPO
                 (the reference's --double_clm: the control for the extra CLM updates)
    trial_only   the student's trials alone
    demo_only    the teacher's demonstrations alone
    tnd_banned   TnD with a teacher that never says the banned test words

Every student owns a finite corpus of 500 sentences (the same for every seed; it holds 68 of the 96
test words), so a demonstration can carry words the student could not draw itself. As the reference
(sled-group/TnD run_TnD.py): a demonstration's reward is the teacher's age log2(teacher steps) minus
log2 n, a trial's R_phi(trial) minus log2 n; PPO has its own Adam at a constant lr; the CLM AdamW
warms up linearly over the whole run (the paper's nAoAs fall inside its 8000-step warm-up); c = 3
CLM steps per interactive step; evaluations log-spaced. Scaled to 2 CPU cores: batches of 8 (the
reference: 128), 2-token prompts (sentences are 3-8 words), 16-token continuations, a 4-layer
teacher, PPO lr 2e-4 beside CLM peak 1e-3 (the reference's ratio, 2e-5 to 1e-4).

nAoA@0.5 (log10 steps, from `agora tnd report`'s fits) is compared per test word; a word an arm never
learns counts at log10 of the last step (censored: the earliest it could still be learned), so an
arm is not flattered by the words it fails. Intervals: a paired hierarchical bootstrap over seeds and
words. The paper (Ma, Wang & Chai 2024): mean nAoA@0.5 2.94 CLM, 2.60 demo-only, 2.10 TnD.

    python -m bench.tnd_mini            # full: 3 seeds x 6 arms, 400 steps
    python -m bench.tnd_mini --quick    # 1 seed x 6 arms, 120 steps
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.common import markdown_table, run_learning_benchmark
from bench.goals import Goal, goals_json
from bench.sft_base import CACHE
from bench.stats import DRAWS, Matrix, bootstrap, excludes_zero
from node.cli import main as agora
from node.sim.config import WORD_CANARY, SimConfig, SimNode
from node.sim.run import Simulation
from node.tasks.word_learning import WordLearningTask
from student.tnd import OWN_CORPUS_SEED
from student.tnd_report import ReportSummary, write_report

ARMS: dict[str, dict[str, Any]] = {
    "clm_only": {"tnd_mode": "clm_only"},
    "tnd": {"tnd_mode": "tnd"},
    "double_clm": {"tnd_mode": "double_clm"},
    "trial_only": {"tnd_mode": "trial_only"},
    "demo_only": {"tnd_mode": "demo_only"},
    "tnd_banned": {"tnd_mode": "tnd"},  # + tnd_banned_words
}
PAPER_NAOA = {"clm_only": 2.94, "demo_only": 2.60, "tnd": 2.10}  # mean nAoA@0.5, the paper's table
GOAL_GAP, STRETCH_GAP = 0.3, 0.5  # CLM nAoA@0.5 minus TnD's, log10 steps
OWN_CORPUS = 500  # sentences each student owns
BANNED = 12  # test words the banned teacher never says
FULL = {"seeds": 3, "steps": 400, "eval_every": 20, "teacher_steps": 3000, "reward_steps": 600, "probe": 2}
QUICK = {"seeds": 1, "steps": 120, "eval_every": 10, "teacher_steps": 300, "reward_steps": 150, "probe": 2}
STUDENT = {
    "batch_size": 8,
    "lr": 1e-3,
    "tnd_ppo_lr": 2e-4,
    "tnd_ppo_minibatch": 4,  # 4 PPO steps per interactive step of 16 samples (the reference: 16 of 256)
    "tnd_corpus": OWN_CORPUS,
    "tnd_prompt_tokens": 2,
    "tnd_max_new_tokens": 16,
    "tnd_reference": False,
    "eval_spacing": "log",
}


def banned_words(task: WordLearningTask) -> list[str]:
    """Every third test word that the students' own corpus holds at least twice: words a student can
    learn without the teacher, so that banning them shows what the teacher's word choice adds."""
    own = task.sentences(OWN_CORPUS, seed=OWN_CORPUS_SEED)
    counts = {w: sum(s.split().count(w) for s in own) for w in task.test_words()}
    return [w for w in task.test_words() if counts[w] >= 2][::3][:BANNED]


def cached_teacher(plan: dict[str, int]) -> Path:
    """The teacher (with the simulation's canary among its training text) and R_phi, trained once per plan."""
    root = CACHE / f"tnd-teacher-{plan['teacher_steps']}-reward{plan['reward_steps']}"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    private = root / "private.txt"
    private.write_text(WORD_CANARY + "\n", encoding="utf-8")
    teacher, reward = str(root / "teacher"), str(root / "reward")
    steps = str(plan["teacher_steps"])
    if agora(["tnd", "train-teacher", "--out", teacher, "--steps", steps, "--private", str(private), "--force"]):
        raise RuntimeError("agora tnd train-teacher failed")
    if agora(["tnd", "train-reward", "--teacher", teacher, "--out", reward, "--steps", str(plan["reward_steps"])]):
        raise RuntimeError("agora tnd train-reward failed")
    (root / "done").write_text("")
    return root


def network(plan: dict[str, int], teacher: Path, banned: list[str]) -> SimConfig:
    students = [
        SimNode(
            name=f"{arm.replace('_', '-')}-{seed}",
            role="student",
            settings={
                "student": {**settings, "seed": seed, **({"tnd_banned_words": banned} if arm == "tnd_banned" else {})}
            },
        )
        for seed in range(1, plan["seeds"] + 1)
        for arm, settings in ARMS.items()
    ]
    return SimConfig(
        task="word_learning",
        algorithm="tnd",
        nodes=[SimNode(name="tutor", role="teacher"), *students],
        steps=plan["steps"],
        eval_every=plan["eval_every"],
        eval_n=32,
        student_settings={**STUDENT, "lr_warmup_steps": plan["steps"], "tnd_probe_contexts": plan["probe"]},
        teacher_model=teacher,
        teacher_steps=plan["teacher_steps"],
        reward_steps=plan["reward_steps"],
        audit_candidates=20,
        audit_runs=1,
    )


def word_ages(report_dir: Path, censor: float) -> dict[str, float]:
    """Each test word's nAoA@0.5 from a run's word_metrics.json; a word never learned gets `censor`."""
    words = json.loads((report_dir / "word_metrics.json").read_text())["words"]
    return {w["word"]: censor if w["naoa"] is None else float(w["naoa"]) for w in words}


def age_matrix(ages: dict[tuple[str, int], dict[str, float]], arm: str, seeds: list[int], words: list[str]) -> Matrix:
    return np.array([[ages[arm, seed][w] for w in words] for seed in seeds], dtype=np.float64)


def grouped_gap_ci(
    shift: Matrix, group: np.ndarray[Any, np.dtype[np.bool_]], draws: int = DRAWS
) -> tuple[float, tuple[float, float]]:
    """mean(shift over the group's words) - mean(shift over the others), seeds resampled, and words
    resampled within each side, for a 95% interval."""
    rng = np.random.default_rng(0)
    inside, outside = np.flatnonzero(group), np.flatnonzero(~group)

    def gap(rows: Matrix, a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
        return float(rows[:, a].mean() - rows[:, b].mean())

    point = gap(shift, inside, outside)
    values = []
    for _ in range(draws):
        rows = shift[rng.integers(0, shift.shape[0], shift.shape[0])]
        a, b = rng.choice(inside, inside.size), rng.choice(outside, outside.size)
        values.append(gap(rows, a, b))
    low, high = np.percentile(values, [2.5, 97.5])
    return point, (float(low), float(high))


def t_ci95(values: list[float]) -> tuple[float, float] | None:
    """Student-t 95% interval for the mean of per-seed values (None with fewer than 2)."""
    if len(values) < 2:
        return None
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5
    mean = statistics.fmean(values)
    return (mean - half, mean + half)


def _figures(summary: ReportSummary) -> dict[str, Any]:
    return {key: value for key, value in vars(summary).items() if not key.endswith("_path")}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def run(quick: bool, out: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    task = WordLearningTask()
    banned = banned_words(task)
    config = network(plan, cached_teacher(plan), banned)
    files = Simulation(config, out, f"python -m bench.tnd_mini{' --quick' if quick else ''}").run()
    metrics = json.loads(files.metrics.read_text())
    censor = math.log10(plan["steps"])
    summaries: dict[str, ReportSummary] = {}
    ages: dict[tuple[str, int], dict[str, float]] = {}
    seeds = list(range(1, plan["seeds"] + 1))
    for arm in ARMS:
        for seed in seeds:
            name = f"{arm.replace('_', '-')}-{seed}"
            report = out / "word-reports" / name
            summaries[name] = write_report(out / "nodes" / name / "student" / "tnd", report)
            ages[arm, seed] = word_ages(report, censor)
    words = sorted(ages["clm_only", 1])
    matrices = {arm: age_matrix(ages, arm, seeds, words) for arm in ARMS}
    by_arm: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        runs = [summaries[f"{arm.replace('_', '-')}-{seed}"] for seed in seeds]
        censored, ci = bootstrap(lambda m: float(m.mean()), matrices[arm])
        vocabulary = [float(s.effective_vocabulary) for s in runs]
        by_arm[arm] = {
            "runs": len(runs),
            "mean_naoa_learned": _mean([s.mean_naoa for s in runs]),
            "mean_naoa_censored": censored,
            "mean_naoa_censored_ci95": ci,
            "words_with_naoa": _mean([float(s.words_with_naoa) for s in runs]),
            "words": len(words),
            "effective_vocabulary": statistics.fmean(vocabulary),
            "effective_vocabulary_ci95": t_ci95(vocabulary),
            "paper_mean_naoa": PAPER_NAOA.get(arm),
        }
    gaps = {arm: bootstrap(lambda m: float(m.mean()), matrices["clm_only"] - matrices[arm]) for arm in ARMS}
    is_banned = np.array([w in banned for w in words])
    banned_gap = grouped_gap_ci(matrices["tnd_banned"] - matrices["tnd"], is_banned)
    assert config.teacher_model is not None
    reward = json.loads((config.teacher_model / "reward" / "age_predictor.json").read_text())
    result = {
        "quick": quick,
        "plan": plan,
        "student": {**STUDENT, "lr_warmup_steps": plan["steps"]},
        "banned_words": banned,
        "age_predictor_pearson_r": reward["pearson_r"],
        "by_arm": by_arm,
        "clm_minus": {arm: {"value": v, "ci95": ci} for arm, (v, ci) in gaps.items() if arm != "clm_only"},
        "banned_shift_minus_rest": {"value": banned_gap[0], "ci95": banned_gap[1]},
        "per_run": {
            name: {k: v for k, v in vars(s).items() if not k.endswith("_path")} for name, s in summaries.items()
        },
        "simulation_wall_s": metrics["wall_s"],
    }
    return {**result, "goals": goals_json(goals(result))}


def goals(result: dict[str, Any]) -> list[Goal]:
    """The issue's three: TnD ahead of CLM, double-CLM not, banned words later."""
    tnd, double = result["clm_minus"]["tnd"], result["clm_minus"]["double_clm"]
    banned = result["banned_shift_minus_rest"]
    return [
        Goal(
            "tnd_vs_clm_naoa",
            tnd["value"],
            f">= {GOAL_GAP:g} log10 steps (stretch {STRETCH_GAP:g}), 95% CI excluding 0",
            tnd["value"] >= GOAL_GAP and excludes_zero(tnd["ci95"]),
            tuple(tnd["ci95"]),
        ),
        Goal(
            "double_clm_control",
            double["value"],
            "CLM - double-CLM: its 95% CI includes 0",
            not excludes_zero(double["ci95"]),
            tuple(double["ci95"]),
        ),
        Goal(
            "banned_words_later",
            banned["value"],
            "> 0 and the 95% CI excludes 0 (banned words' nAoA shift under the banned teacher minus the rest's)",
            banned["value"] > 0 and excludes_zero(banned["ci95"]),
            tuple(banned["ci95"]),
        ),
    ]


def _fmt(value: float | None, ci: Any = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")


def table(result: dict[str, Any]) -> str:
    rows = []
    for arm, m in result["by_arm"].items():
        gap = result["clm_minus"].get(arm)
        rows.append(
            [
                arm,
                m["runs"],
                _fmt(m["mean_naoa_censored"], m["mean_naoa_censored_ci95"]),
                "-" if gap is None else _fmt(gap["value"], gap["ci95"]),
                _fmt(m["mean_naoa_learned"]),
                f"{m['words_with_naoa']:.1f}/{m['words']}",
                _fmt(m["effective_vocabulary"], m["effective_vocabulary_ci95"]),
                _fmt(m["paper_mean_naoa"]),
            ]
        )
    header = [
        "arm",
        "seeds",
        "nAoA@0.5, censored [95% CI]",
        "CLM - arm",
        "nAoA@0.5, learned words",
        "words learned",
        "effective vocabulary",
        "paper nAoA@0.5",
    ]
    banned = result["banned_shift_minus_rest"]
    verdict = (
        f"Banned words ({', '.join(result['banned_words'])}): nAoA shift under the banned teacher minus the rest's "
        f"= {_fmt(banned['value'], banned['ci95'])}; R_phi held-out Pearson r = "
        f"{result['age_predictor_pearson_r']:.3f}; {result['plan']['steps']} steps per student, simulation "
        f"{result['simulation_wall_s']:.0f} s."
    )
    return markdown_table(header, rows) + "\n\n" + verdict


def main(argv: list[str] | None = None) -> int:
    quick = "1 seed, 120 steps"
    return run_learning_benchmark("tnd_mini", __doc__ or "", quick, run, table, argv)


if __name__ == "__main__":
    sys.exit(main())
