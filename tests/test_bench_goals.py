"""Every committed benchmark result carries a complete `goals` list, and each module's `goals()`
agrees with the verdicts its own results already record (no benchmark is run here)."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from bench.common import write_results
from bench.goals import RESULTS, Goal, goals_json, problems

MODULES = (
    "serving",
    "network",
    "dp_sgd",
    "lesson_rpc",
    "tnd_mini",
    "social_mini",
    "tripost_mini",
    "yoda_mini",
    "stage_b_loss",
)
COMPLETE = {"name": "x", "value": 1.0, "target": ">= 1", "met": True, "ci95": None}


def committed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return data


def derived(name: str, data: dict[str, Any] | None = None) -> dict[str, Goal]:
    """NAME's goals from its committed result (or from `data`), by goal name."""
    module = importlib.import_module(f"bench.{name}")
    found: list[Goal] = module.goals(committed(name) if data is None else data)
    return {goal.name: goal for goal in found}


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=str)
def test_committed_results_have_complete_goals(path: Path) -> None:
    assert problems(json.loads(path.read_text())) == []


@pytest.mark.parametrize("name", MODULES)
def test_committed_goals_are_what_goals_derives(name: str) -> None:
    """The backfilled goals are the module's own function of the same data, not a hand edit."""
    data = committed(name)
    assert data["goals"] == goals_json(list(derived(name).values()))


def test_serving_goals_judge_speedup_and_overhead() -> None:
    data, goals = committed("serving"), derived("serving")
    assert set(goals) == {"batched_speedup", "host_overhead"}
    assert goals["batched_speedup"].met == (data["batching"]["speedup"] >= 4)
    assert goals["host_overhead"].value == pytest.approx(100 * data["overhead"]["overhead"])
    assert goals["host_overhead"].met == (data["overhead"]["overhead"] <= 0.05)


def test_network_goals_judge_rounds_per_size() -> None:
    data, goals = committed("network"), derived("network")
    for size in data["convergence"]:
        n, limit = size["nodes"], size["goal_rounds"]
        assert goals[f"convergence_rounds_n{n}"].met == (size["median_rounds"] <= limit)
        assert goals[f"update_spread_rounds_n{n}"].met == (size["update_median_rounds"] <= limit)


def test_network_goal_misses_when_a_run_never_converged() -> None:
    data = copy.deepcopy(committed("network"))
    data["convergence"][0]["converged_runs"] -= 1  # the median of the rest would still look fine
    size = data["convergence"][0]["nodes"]
    assert not derived("network", data)[f"convergence_rounds_n{size}"].met


def test_dp_sgd_goals_follow_the_table_verdict_per_mode() -> None:
    data, goals = committed("dp_sgd"), derived("dp_sgd")
    modes = [mode for mode in data["modes"] if mode != "plain"]
    assert set(goals) == {f"dp_sgd_{mode}_over_plain" for mode in modes}
    for mode in modes:
        assert goals[f"dp_sgd_{mode}_over_plain"].met == (data["modes"][mode]["over_plain"] <= data["goal"])


def test_dp_sgd_failed_mode_is_a_missed_goal() -> None:
    data = copy.deepcopy(committed("dp_sgd"))
    data["modes"]["ghost"] = {"error": "RuntimeError: unsupported"}
    goal = derived("dp_sgd", data)["dp_sgd_ghost_over_plain"]
    assert goal.value is None and not goal.met


def test_lesson_rpc_goals_match_its_met_fields() -> None:
    data, goals = committed("lesson_rpc"), derived("lesson_rpc")
    assert len(goals) == len(data["sizes"])
    for size in data["sizes"]:
        goal = goals[f"lesson_rpc_over_raw_{size['prompts']}x{size['max_new_tokens']}"]
        assert goal.met == size["met"]
        assert goal.ci95 is not None and goal.ci95[0] <= size["paired_ratio"] <= goal.ci95[1]
    assert all(goal.met for goal in goals.values()) == data["met"]


def test_lesson_rpc_median_interval_is_the_order_statistic_one() -> None:
    from bench.lesson_rpc import median_ci95

    # n = 30: P(Bin(30, 1/2) <= 9) = 2.1% <= 2.5% < P(<= 10), so x_(10) and x_(21).
    assert median_ci95([float(v) for v in range(1, 31)]) == (10.0, 21.0)
    assert median_ci95([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # too few for 95%


def test_tnd_mini_goals_are_its_recorded_gaps() -> None:
    data, goals = committed("tnd_mini"), derived("tnd_mini")
    tnd, double = data["clm_minus"]["tnd"], data["clm_minus"]["double_clm"]
    assert goals["tnd_vs_clm_naoa"].value == tnd["value"] and goals["tnd_vs_clm_naoa"].ci95 == tuple(tnd["ci95"])
    assert goals["double_clm_control"].value == double["value"]
    assert goals["banned_words_later"].value == data["banned_shift_minus_rest"]["value"]


@pytest.mark.parametrize(
    ("gap", "ci", "met"),
    [(0.6, (0.2, 1.0), True), (0.6, (-0.1, 1.2), False), (0.2, (0.1, 0.3), False)],
)
def test_tnd_mini_goal_needs_the_gap_and_an_interval_off_zero(gap: float, ci: tuple[float, float], met: bool) -> None:
    data = copy.deepcopy(committed("tnd_mini"))
    data["clm_minus"]["tnd"] = {"value": gap, "ci95": list(ci)}
    assert derived("tnd_mini", data)["tnd_vs_clm_naoa"].met is met


def test_tnd_mini_banned_gap_resamples_each_group_of_words_apart() -> None:
    import numpy as np

    from bench.tnd_mini import grouped_gap_ci

    rng = np.random.default_rng(1)
    shift = rng.normal(0.0, 0.05, size=(3, 40))
    banned = np.zeros(40, dtype=bool)
    banned[:10] = True
    shift[:, banned] += 0.5  # banned words learned half a decade later, the rest unmoved
    value, (low, high) = grouped_gap_ci(shift, banned, draws=400)
    assert 0.45 < value < 0.55 and 0.4 < low < value < high < 0.6
    value, (low, high) = grouped_gap_ci(shift - shift * banned, banned, draws=400)  # no shift at all
    assert low < 0 < high


def test_social_mini_goals_match_its_verdicts() -> None:
    data, goals = committed("social_mini"), derived("social_mini")
    gaps = [goals[f"generated_minus_original_seen_n{n}"] for n in data["plan"]["ns"]]
    assert all(goal.met for goal in gaps) == data["gap_goal_met"]
    assert goals["mean_canary_rank_taught"].met == data["rank_goal_met"]
    assert len(goals) == len(gaps) + 1


def test_social_mini_rank_goal_scales_with_candidates() -> None:
    data = copy.deepcopy(committed("social_mini"))
    data["plan"]["candidates"], data["mean_canary_rank_taught"] = 100, 45.0  # 450 * 99 / 999 = 44.6
    assert derived("social_mini", data)["mean_canary_rank_taught"].met


@pytest.mark.parametrize(
    "goal",
    [
        {key: value for key, value in COMPLETE.items() if key != "ci95"},
        {**COMPLETE, "met": 1},
        {**COMPLETE, "met": "yes"},
        {**COMPLETE, "ci95": [0.1]},
        {**COMPLETE, "ci95": "0.1..0.2"},
    ],
    ids=["missing-key", "int-met", "str-met", "short-ci95", "str-ci95"],
)
def test_problems_rejects_an_incomplete_goal(goal: dict[str, Any]) -> None:
    assert problems({"goals": [goal]})


def test_problems_accepts_complete_goals() -> None:
    assert problems({"goals": [COMPLETE, {**COMPLETE, "value": None, "met": False, "ci95": [0.1, 0.2]}]}) == []
    assert problems({"goals": []}) == ["no goals list"]


def test_write_results_refuses_data_without_goals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="goals"):
        write_results("nogoals", {"figure": 1.0}, "| table |", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())
