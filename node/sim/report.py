"""The report of an `agora simulate` run: report.md and curves.png, rendered from metrics.json.

The runner gathers every figure of a run into one metrics dict (schema in the simulation's docs; accuracies are
fractions in [0, 1]). :func:`write_report` saves that dict as `metrics.json` and renders `report.md` and `curves.png`
from it and from nothing else, so the three files always agree: metrics.json is the source of truth, and every
percentage in the Markdown is :func:`fmt_pct` of a number in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPORT_FILE, PLOT_FILE, METRICS_FILE = "report.md", "curves.png", "metrics.json"
BASELINE_COLOR = "0.45"  # grey
MARKED_EVENTS = ("killed", "restarted")  # drawn on the curves as dotted vertical lines


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    plot: Path
    metrics: Path


def write_report(metrics: dict[str, Any], out_dir: Path) -> ReportFiles:
    """Write metrics.json, report.md and curves.png into out_dir (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / REPORT_FILE, out_dir / PLOT_FILE, out_dir / METRICS_FILE)
    files.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files.markdown.write_text(render_markdown(metrics), encoding="utf-8")
    plot_curves(metrics, files.plot)
    return files


# -- formatting -------------------------------------------------------------------------------------------


def fmt_pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal ("25.0%"); "-" for None or NaN."""
    if x is None or math.isnan(x):
        return "-"
    return f"{100 * x:.1f}%"


def _gain(x: float | None) -> str:
    text = fmt_pct(x)
    return f"+{text}" if x is not None and x > 0 else text


def _eps(x: float) -> str:
    return f"{x:.4g}"


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def _dash(x: object) -> str:
    return "-" if x is None else str(x)


def _cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _by_kind(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "-"


def _students(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [n for n in metrics["nodes"] if n["role"] == "student"]


# -- report.md --------------------------------------------------------------------------------------------


def render_markdown(metrics: dict[str, Any]) -> str:
    """The whole report.md: title, verdict, then one section per aspect of the run."""
    lines = [f"# Agora simulation: {metrics['algorithm']} on {metrics['task']}", "", f"**{metrics['verdict']}**", ""]
    sections = (_what_ran, _accuracy, _lessons, _privacy, _blocked, _faults, _secret_sharer, _reproduce)
    for section in sections:
        lines += [*section(metrics), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _what_ran(m: Mapping[str, Any]) -> list[str]:
    net, teacher = m["network"], m["teacher_model"]
    converged = net.get("converged_after_s")
    peers = "no convergence time was recorded" if converged is None else f"peers converged after {converged:.1f} s"
    rows = [
        [
            n["name"],
            n["role"],
            n.get("algorithm") or "-",
            "yes" if n.get("baseline") else "no",
            _dash(n.get("seed")),
            n["address"],
            n["starts"],
            _seconds(n.get("joined_after_s")) if n.get("joined") else "not joined",
        ]
        for n in m["nodes"]
    ]
    return [
        "## What ran",
        "",
        f"- Started {m['started_at']}, ran for {m['wall_s']:.1f} s (agora {m['agora_version']}).",
        f"- Network: {net['transport']} transport, mTLS {'on' if net['mtls'] else 'off'}; {peers}.",
        f"- Teacher model `{teacher['path']}`: {str(teacher['how']).rstrip('.')}.",
        *([f"- Machine: {_machine(m['machine'])}."] if isinstance(m.get("machine"), Mapping) else []),
        "",
        *_table(["node", "role", "algorithm", "baseline", "seed", "address", "starts", "joined after"], rows),
    ]


def _machine(facts: Mapping[str, Any]) -> str:
    gpu = f", GPU {facts['gpu']}" if facts.get("gpu") else ", no GPU"
    return (
        f"{facts.get('cpu')}, {facts.get('cores')} cores{gpu}; Python {facts.get('python')}, "
        f"torch {facts.get('torch')}, transformers {facts.get('transformers')}"
    )


def _accuracy(m: Mapping[str, Any]) -> list[str]:
    gains: Mapping[str, Mapping[str, float]] = m["baseline"]["gain"]
    rows = []
    for n in _students(m):
        before, after = n.get("accuracy_before") or {}, n.get("accuracy_after") or {}
        gain = gains.get(n["name"], {})
        gain_cells = ["baseline"] * 2 if n.get("baseline") else [_gain(gain.get("seen")), _gain(gain.get("unseen"))]
        steps = f"{n.get('steps_done', 0)}/{n.get('steps_planned', 0)}"
        accuracies = [before.get("seen"), before.get("unseen"), after.get("seen"), after.get("unseen")]
        rows.append([n["name"], steps, *map(fmt_pct, accuracies), *gain_cells])
    header = ["student", "steps", "before, seen", "before, unseen", "after, seen", "after, unseen"]
    header += ["gain over baseline, seen", "gain over baseline, unseen"]
    baseline = m["baseline"].get("node")
    note = f"baseline `{baseline}`" if baseline else "no baseline student in this run"
    return [
        "## Accuracy",
        "",
        "Accuracy on held-out problems, before and after learning: `seen` problems are new ones of the",
        "training distribution, `unseen` ones have shapes no student trained on (longer, deeper, other",
        "sentence frames). The gain is the student's after-accuracy minus the no-teacher baseline's, in",
        f"percentage points ({note}).",
        "",
        *_table(header, rows),
        "",
        "![accuracy curves](curves.png)",
    ]


def _lessons(m: Mapping[str, Any]) -> list[str]:
    by_kind: Mapping[str, int] = m["lessons_by_kind"]
    kinds = [[kind, n] for kind, n in sorted(by_kind.items())] + [["**total**", sum(by_kind.values())]]
    rows = []
    for n in m["nodes"]:
        if n["role"] == "student":
            received = n.get("lessons_received") or {}
            rows.append(
                [n["name"], "received", sum(received.values()), _by_kind(received), n.get("lessons_applied", 0)]
            )
        else:
            served = n.get("lessons_served") or {}
            rows.append([n["name"], "served", sum(served.values()), _by_kind(served), "-"])
    return [
        "## Lessons exchanged",
        "",
        *_table(["kind", "lessons"], kinds),
        "",
        *_table(["node", "direction", "lessons", "by kind", "applied"], rows),
    ]


def _privacy(m: Mapping[str, Any]) -> list[str]:
    rows = []
    for n in m["nodes"]:
        spent, budget = float(n["epsilon_spent"]), float(n["epsilon_budget"])
        share = spent / budget if budget > 0 else None
        rows.append([n["name"], _eps(spent), _eps(budget), fmt_pct(share)])
    return ["## Privacy", "", *_table(["node", "ε spent", "ε budget", "share of budget"], rows)]


def _blocked(m: Mapping[str, Any]) -> list[str]:
    blocked: Mapping[str, int] = m["blocked_by_reason"]
    if not any(blocked.values()):
        return ["## Blocked lessons", "", "none: no lesson tripped a teacher's leakage guard"]
    rows = [[reason, n] for reason, n in sorted(blocked.items())] + [["**total**", sum(blocked.values())]]
    return [
        "## Blocked lessons",
        "",
        "Lessons a teacher's leakage guards kept back:",
        "",
        *_table(["reason", "lessons"], rows),
    ]


def _faults(m: Mapping[str, Any]) -> list[str]:
    events: Sequence[Mapping[str, Any]] = m["events"]
    if not events:
        return ["## Faults and recovery", "", "no faults were injected"]
    rows = [
        [f"+{e['at_s']:.1f} s", _dash(e.get("network_step")), e["node"], e["kind"], e.get("detail", "")] for e in events
    ]
    return ["## Faults and recovery", "", *_table(["time", "network step", "node", "what", "detail"], rows)]


def _secret_sharer(m: Mapping[str, Any]) -> list[str]:
    audit = m.get("secret_sharer")
    if not audit:
        return ["## Secret Sharer", "", "The Secret Sharer audit was turned off for this run."]
    candidates = audit["candidates"]
    rows = [
        [
            a["node"],
            a["role"],
            f"{a['mean_rank']:.1f}",
            f"{a['min_rank']:.4g}",
            f"{a['rank0']}/{audit['runs']}",
            f"{a['exposure']:.2f}",
        ]
        for a in audit["models"]
    ]
    draws = f"{audit['runs']} draw" + ("s" if audit["runs"] != 1 else "")
    return [
        "## Secret Sharer",
        "",
        f"A canary (`{audit['canary']}`) was planted in {audit['planted_in']}. Each model ranks the real",
        f"secret among {candidates} candidates by likelihood, over {draws}. Rank 0 means it prefers the real",
        f"secret to every other candidate; chance ≈ ({candidates} - 1)/2 = {audit['chance_rank']:.1f}. Exposure is",
        "log2(candidates) - log2(rank + 1) bits, averaged over draws: about 1 at chance, more if memorized.",
        "",
        *_table(["node", "role", "mean rank", "min rank", "rank-0 draws", "exposure (bits)"], rows),
    ]


def _reproduce(m: Mapping[str, Any]) -> list[str]:
    return ["## Reproduce", "", "```sh", str(m["command"]), "```"]


# -- curves.png -------------------------------------------------------------------------------------------


def plot_curves(metrics: dict[str, Any], path: Path) -> None:
    """Accuracy (%) against learning step: seen solid, unseen dashed, the baseline grey; kills and restarts dotted."""
    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    axes = figure.subplots()
    colors: dict[str, str] = {}
    taught = 0
    for node in _students(metrics):
        if node.get("baseline"):
            color, label = BASELINE_COLOR, f"{node['name']} (no teacher)"
        else:
            color, label, taught = f"C{taught}", str(node["name"]), taught + 1
        colors[node["name"]] = color
        curve = node.get("curve") or []
        steps = [p["step"] for p in curve]
        axes.plot(steps, [100 * p["seen"] for p in curve], "-o", color=color, markersize=3, label=f"{label}, seen")
        axes.plot(steps, [100 * p["unseen"] for p in curve], "--", color=color, label=f"{label}, unseen")
    _mark_events(axes, metrics, colors)
    axes.set(xlabel="learning step", ylabel="accuracy (%)")
    axes.set_title(f"{metrics['algorithm']} on {metrics['task']}: taught students vs the no-teacher baseline")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)


def _mark_events(axes: Axes, metrics: Mapping[str, Any], colors: Mapping[str, str]) -> None:
    """A dotted line at the student's last evaluated step at or before each of its kills and restarts."""
    curves = {n["name"]: [p["step"] for p in n.get("curve") or []] for n in _students(metrics)}
    marked = 0
    for event in metrics["events"]:
        node, step = event["node"], event.get("network_step")
        if event["kind"] not in MARKED_EVENTS or node not in curves or step is None:
            continue
        earlier = [s for s in curves[node] if s <= step]
        if not earlier:
            continue
        x = max(earlier)
        axes.axvline(x, linestyle=":", linewidth=1.2, color=colors[node])
        y = 0.97 - 0.07 * (marked % 4)  # staggered so that marks at one step stay legible
        axes.text(
            x,
            y,
            f" {node} {event['kind']}",
            transform=axes.get_xaxis_transform(),
            fontsize="x-small",
            color=colors[node],
            va="top",
        )
        marked += 1
