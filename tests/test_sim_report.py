"""The simulation report: report.md and curves.png rendered from metrics.json, and agreeing with it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.image import imread

from node.sim.report import ReportFiles, fmt_pct, plot_curves, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _student(name: str, *, baseline: bool, rise: float, seed: int) -> dict[str, Any]:
    curve = [{"step": s, "seen": 0.05 + rise * s / 40, "unseen": 0.04 + rise * s / 80} for s in range(0, 41, 10)]
    return {
        "name": name,
        "role": "student",
        "baseline": baseline,
        "algorithm": None if baseline else "tripost",
        "seed": seed,
        "address": f"127.0.0.1:{50060 + seed}",
        "metrics_url": f"http://127.0.0.1:{9100 + seed}/metrics",
        "netns": None,
        "joined": True,
        "joined_after_s": 1.5 + seed,
        "starts": 1,
        "exit_code": 0,
        "epsilon_spent": 0.0 if baseline else 1.23456 * seed,
        "epsilon_budget": 8.0,
        "steps_done": 40,
        "steps_planned": 40,
        "curve": curve,
        "accuracy_before": {"seen": curve[0]["seen"], "unseen": curve[0]["unseen"]},
        "accuracy_after": {"seen": curve[-1]["seen"], "unseen": curve[-1]["unseen"]},
        "lessons_received": {} if baseline else {"Demonstrate": 30 + seed, "Critique": 5},
        "lessons_applied": 0 if baseline else 28 + seed,
        "resumed_from": [],
    }


def make_metrics() -> dict[str, Any]:
    teacher = {
        "name": "teacher-0",
        "role": "teacher",
        "baseline": False,
        "algorithm": None,
        "seed": None,
        "address": "127.0.0.1:50051",
        "metrics_url": None,
        "netns": None,
        "joined": True,
        "joined_after_s": 0.4,
        "starts": 1,
        "exit_code": 0,
        "epsilon_spent": 2.718281,
        "epsilon_budget": 10.0,
        "lessons_served": {"Demonstrate": 67, "Critique": 10},
        "lessons_blocked": {"canary": 3, "ngram": 2, "pii": 1},
    }
    alice = _student("alice", baseline=False, rise=0.5, seed=1)
    bob = _student("bob", baseline=False, rise=0.4, seed=2)
    bob["starts"], bob["resumed_from"] = 2, [20]
    lone = _student("lone", baseline=True, rise=0.1, seed=3)
    gain = {
        s["name"]: {k: s["accuracy_after"][k] - lone["accuracy_after"][k] for k in ("seen", "unseen")}
        for s in (alice, bob, lone)
    }
    return {
        "agora_version": "0.4.0",
        "started_at": "2025-06-01T12:00:00Z",
        "wall_s": 312.4,
        "command": "agora simulate --task arithmetic --algorithm tripost --students 2 --seed 7",
        "task": "arithmetic",
        "algorithm": "tripost",
        "network": {"transport": "loopback", "mtls": True, "converged_after_s": 2.3},
        "teacher_model": {
            "path": "runs/teacher",
            "how": "trained by `agora tnd train-teacher` in 112 s",
            "seconds": 112,
        },
        "nodes": [teacher, alice, bob, lone],
        "lessons_by_kind": {"Demonstrate": 67, "Critique": 10},
        "blocked_by_reason": {"canary": 3, "ngram": 2, "pii": 1},
        "events": [
            {"at_s": 95.31, "network_step": 23, "node": "bob", "kind": "killed", "detail": "SIGKILL by the fault plan"},
            {"at_s": 99.0, "network_step": 23, "node": "bob", "kind": "restarted", "detail": "start 2 of at most 3"},
            {"at_s": 101.5, "network_step": 24, "node": "bob", "kind": "resumed", "detail": "from checkpoint 20"},
        ],
        "secret_sharer": {
            "canary": "the vault code is ****",
            "planted_in": "teacher-0",
            "candidates": 1000,
            "runs": 5,
            "chance_rank": 499.5,
            "models": [
                {
                    "node": "teacher-0",
                    "role": "teacher",
                    "mean_rank": 12.4,
                    "min_rank": 0,
                    "rank0": 2,
                    "exposure": 6.34,
                },
                {"node": "alice", "role": "student", "mean_rank": 480.2, "min_rank": 101, "rank0": 0, "exposure": 0.06},
            ],
        },
        "baseline": {"node": "lone", "gain": gain},
        "verdict": "both taught students beat the no-teacher baseline on seen problems",
    }


def section(markdown: str, title: str) -> str:
    """The text of one `## title` section."""
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else len(markdown)]


def row(text: str, first_cell: str) -> str:
    matches = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(matches) == 1, (first_cell, matches)
    return matches[0]


def test_fmt_pct() -> None:
    assert fmt_pct(0.25) == "25.0%"
    assert fmt_pct(1.0) == "100.0%"
    assert fmt_pct(0.0) == "0.0%"
    assert fmt_pct(None) == "-"
    assert fmt_pct(float("nan")) == "-"


def test_write_report_files_agree_with_metrics(tmp_path: Path) -> None:
    metrics = make_metrics()
    original = copy.deepcopy(metrics)
    files = write_report(metrics, tmp_path / "out")
    assert files == ReportFiles(tmp_path / "out/report.md", tmp_path / "out/curves.png", tmp_path / "out/metrics.json")
    assert all(p.is_file() for p in (files.markdown, files.plot, files.metrics))
    assert metrics == original  # rendering leaves the dict alone

    saved = json.loads(files.metrics.read_text(encoding="utf-8"))
    assert saved == metrics

    assert files.plot.read_bytes()[:8] == PNG_MAGIC
    image = np.asarray(imread(files.plot))
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10  # not a blank canvas

    md = files.markdown.read_text(encoding="utf-8")
    assert md == render_markdown(saved)
    assert md.startswith("# Agora simulation: tripost on arithmetic\n")
    assert f"**{metrics['verdict']}**" in md

    accuracy = section(md, "Accuracy")
    for node in saved["nodes"]:
        if node["role"] != "student":
            continue
        line = row(accuracy, node["name"])
        for value in (*node["accuracy_before"].values(), *node["accuracy_after"].values()):
            assert fmt_pct(value) in line
        if node["baseline"]:
            assert line.count("baseline") == 2
        else:
            for value in saved["baseline"]["gain"][node["name"]].values():
                assert fmt_pct(value) in line
    assert "![accuracy curves](curves.png)" in accuracy

    what_ran = section(md, "What ran")
    assert "| teacher-0 | teacher | - | no | - | 127.0.0.1:50051 | 1 | 0.4 s |" in what_ran
    assert "| lone | student | - | yes | 3 |" in what_ran
    assert "112 s" in what_ran and "mTLS on" in what_ran and "312.4 s" in what_ran

    lessons = section(md, "Lessons exchanged")
    assert "| Demonstrate | 67 |" in lessons and "| **total** | 77 |" in lessons
    assert row(lessons, "bob").endswith("| 30 |")  # applied

    blocked = section(md, "Blocked lessons")
    for reason, count in saved["blocked_by_reason"].items():
        assert f"| {reason} | {count} |" in blocked

    faults = section(md, "Faults and recovery")
    for event in saved["events"]:
        assert event["detail"] in faults and event["kind"] in faults
    assert "| +95.3 s | 23 | bob | killed |" in faults

    privacy = section(md, "Privacy")
    for node in saved["nodes"]:
        spent, budget = node["epsilon_spent"], node["epsilon_budget"]
        assert f"| {node['name']} | {spent:.4g} | {budget:.4g} | {fmt_pct(spent / budget)} |" in privacy
    assert "| alice | 1.235 | 8 | 15.4% |" in privacy

    audit = section(md, "Secret Sharer")
    assert "the vault code is ****" in audit and "1000 candidates" in audit and "499.5" in audit
    assert "| teacher-0 | teacher | 12.4 | 0 | 2/5 | 6.34 |" in audit

    assert f"```sh\n{saved['command']}\n```" in section(md, "Reproduce")


def test_quiet_run_says_so(tmp_path: Path) -> None:
    metrics = make_metrics()
    metrics.update(secret_sharer=None, events=[], blocked_by_reason={})
    files = write_report(metrics, tmp_path)
    md = files.markdown.read_text(encoding="utf-8")
    assert "none: no lesson tripped a teacher's leakage guard" in section(md, "Blocked lessons")
    assert "no faults were injected" in section(md, "Faults and recovery")
    assert "turned off" in section(md, "Secret Sharer")
    assert files.plot.read_bytes()[:8] == PNG_MAGIC


def test_empty_and_single_point_curves_still_plot(tmp_path: Path) -> None:
    metrics = make_metrics()
    nodes = metrics["nodes"]
    nodes[1]["curve"] = []  # alice never evaluated
    nodes[2]["curve"] = nodes[2]["curve"][:1]  # bob once, at step 0: the kill at step 23 marks step 0
    plot_curves(metrics, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC

    for node in nodes:
        node["curve"] = []
    metrics["nodes"] = nodes[:1]  # no students at all: an empty, still valid, figure
    plot_curves(metrics, tmp_path / "empty.png")
    assert imread(tmp_path / "empty.png").shape[0] > 300
