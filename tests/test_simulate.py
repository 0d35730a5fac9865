"""`agora simulate` end to end, as a user runs it: a teacher trained here with a planted canary,
two TnD students and a no-teacher baseline, each a real process over mTLS; then a run with a
student killed -9 and restarted. The report's three files are checked against each other and
against the nodes' own SQLite stores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib.image import imread

from node.netns import netns_unavailable
from node.sim.report import fmt_pct
from node.store import read_rows

# Small enough for CI (about a minute a run on 2 cores), big enough for lessons to flow.
SMALL = {
    "steps": 40,
    "eval_every": 10,
    "eval_n": 8,
    "teacher_steps": 60,
    "reward_contexts": 24,
    "reward_steps": 60,
    "audit_candidates": 20,
    "audit_runs": 1,
}


def simulate(out: Path, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "simulate", "--config", str(config), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("sim") / "run"
    return out, simulate(out)


def load(out: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def row(markdown_section: str, first_cell: str) -> list[str]:
    for line in markdown_section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row for {first_cell!r} in:\n{markdown_section}")


def test_a_small_network_learns_and_reports(first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, done = first_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = load(out)
    nodes = {n["name"]: n for n in metrics["nodes"]}
    assert [n["role"] for n in metrics["nodes"]] == ["teacher", "student", "student", "student"]
    assert [n["baseline"] for n in metrics["nodes"]] == [False, False, False, True]

    # every node joined, and the live progress named each node's metrics endpoint
    assert all(n["joined"] for n in nodes.values()), nodes
    for node in nodes.values():
        assert node["metrics_url"] in done.stdout

    for name in ("ada", "ben"):
        student = nodes[name]
        received = sum(student["lessons_received"].values())
        assert received > 0 and student["lessons_applied"] > 0, student
        # the counts agree with the student's own provenance store
        rows = read_rows(out / "nodes" / name, "SELECT COUNT(*) FROM received_lessons WHERE applied_step IS NOT NULL")
        assert rows[0][0] == student["lessons_applied"]
        assert student["steps_done"] == SMALL["steps"]
        assert student["accuracy_after"]["seen"] >= student["accuracy_before"]["seen"]
    assert nodes["solo"]["lessons_received"] == {}  # the baseline never asked a teacher

    for node in nodes.values():
        assert node["epsilon_spent"] <= node["epsilon_budget"], node

    served = read_rows(out / "nodes" / "tutor", "SELECT COUNT(*) FROM lessons")[0][0]
    assert sum(metrics["lessons_by_kind"].values()) == served
    assert served == sum(sum(nodes[n]["lessons_received"].values()) for n in ("ada", "ben"))

    # the three report files exist and agree with each other
    markdown = (out / "report.md").read_text()
    accuracy = section(markdown, "Accuracy")
    for name in ("ada", "ben", "solo"):
        cells = row(accuracy, name)
        assert cells[4] == fmt_pct(nodes[name]["accuracy_after"]["seen"])
        assert cells[5] == fmt_pct(nodes[name]["accuracy_after"]["unseen"])
    assert row(section(markdown, "Lessons exchanged"), "**total**")[1] == str(served)
    for name, node in nodes.items():
        assert row(section(markdown, "Privacy"), name)[1] == f"{node['epsilon_spent']:.4g}"
    audit = metrics["secret_sharer"]
    assert {m["node"] for m in audit["models"]} == set(nodes)
    assert "****" in audit["canary"] and "blanket" not in markdown + json.dumps(metrics)
    assert metrics["verdict"] in markdown

    image = imread(out / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.05  # not a blank canvas


def test_a_killed_student_rejoins_resumes_and_the_report_says_so(
    first_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    models = first_run[0] / "models"
    assert (models / "teacher" / "final").is_dir(), "the first run trained the teacher"
    out = tmp_path / "faults"
    done = simulate(out, "--teacher-model", str(models), "--kill", "ada@12", "--restart", "ada@20")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = load(out)
    ada = next(n for n in metrics["nodes"] if n["name"] == "ada")
    assert ada["starts"] == 2 and ada["steps_done"] == SMALL["steps"]
    assert ada["resumed_from"] and 0 < ada["resumed_from"][0] < SMALL["steps"]
    kinds = [e["kind"] for e in metrics["events"] if e["node"] == "ada"]
    assert kinds == ["killed", "restarted", "resumed", "rejoined"] or kinds == [
        "killed",
        "restarted",
        "rejoined",
        "resumed",
    ], metrics["events"]
    rejoined = next(e for e in metrics["events"] if e["node"] == "ada" and e["kind"] == "rejoined")
    assert rejoined["detail"].startswith("alive again"), rejoined
    # the resumed student repeated no update: one row per step in its provenance store
    steps = [r[0] for r in read_rows(out / "nodes" / "ada", "SELECT step FROM updates ORDER BY step")]
    assert steps == list(range(1, SMALL["steps"] + 1))

    faults = section((out / "report.md").read_text(), "Faults and recovery")
    for kind in ("killed", "restarted", "resumed", "rejoined"):
        assert re.search(rf"\| ada \| {kind} \|", faults), faults


def test_netns_gives_each_node_its_own_address(
    first_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"--netns needs network namespaces: {reason}")
    out = tmp_path / "netns"
    done = simulate(out, "--netns", "--no-baseline", "--teacher-model", str(first_run[0] / "models"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = load(out)
    assert metrics["network"]["transport"] == "netns"
    addresses = [n["address"] for n in metrics["nodes"]]
    assert len({a.rsplit(":", 1)[0] for a in addresses}) == len(addresses) == 3  # one IP each
    assert all(a.endswith(":50051") and not a.startswith("127.") for a in addresses)  # the same port everywhere
    assert len({n["netns"] for n in metrics["nodes"]}) == 3
    for node in metrics["nodes"]:
        assert node["joined"], node
        if node["role"] == "student":
            assert node["lessons_applied"] > 0 and node["steps_done"] == SMALL["steps"]
    assert not any(Path("/var/run/netns").glob("agora-*")), "namespaces were removed after the run"
