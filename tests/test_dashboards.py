"""The Grafana dashboards and provisioning in deploy/grafana/ ask only for series the nodes export.

Exported names come from the real registry of node/metrics.py, so renaming an instrument without
updating the dashboards fails here. No Grafana runs: the files are checked as data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.metrics import NodeMetrics

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "prometheus"

# Series Prometheus writes for every scrape target itself, not exported by the node.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"})

# PromQL functions, aggregations, keywords and Grafana's label_values: identifiers that are not metrics.
_WORDS = """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg avg_over_time bottomk ceil changes
    clamp clamp_max clamp_min count count_over_time count_values cos cosh day_of_month day_of_week
    day_of_year days_in_month deg delta deriv exp floor group histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    hour idelta increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time max
    max_over_time min min_over_time minute month predict_linear present_over_time quantile
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc
    sort_desc sqrt stddev stddev_over_time stdvar stdvar_over_time sum sum_over_time tan tanh time
    timestamp topk vector year and or unless bool offset by without on ignoring group_left group_right
    inf nan label_values label_names metrics query_result
"""
PROMQL_WORDS = frozenset(_WORDS.split())

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)(?:ms|s|m|h|d|w|y)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana label_values query) reads.

    Strings, Grafana variables, label matchers, range selectors, label lists of by/without/on and
    numbers are cut first; what identifiers remain are functions, keywords or metric names.
    """
    if (match := _LABEL_VALUES.match(expr)) is not None:
        expr = match.group(1)  # its last argument is a label name, not a metric
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}") or expr.count("[") != expr.count("]"):
        raise ValueError(f"unbalanced brackets in {expr!r}")
    text = _GRAFANA_VAR.sub("", _STRING.sub('""', expr))
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _NUMBER.sub(" ", _LABEL_LIST.sub("", text))
    return {word for word in _IDENT.findall(text) if word not in PROMQL_WORDS}


def exported_names() -> set[str]:
    """Series names a node serves on /metrics, from its real registry.

    Labelled instruments have no samples until first used, so names come from each family's
    type: counters are served as <name>_total, histograms as _bucket, _sum and _count.
    """
    metrics = NodeMetrics(model="tiny:llama")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"]}
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        names.update(sample.name for sample in family.samples)
    return names


def load(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text())
    assert isinstance(board, dict)
    return board


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries data, rows' nested panels included (rows themselves do not)."""
    found: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r} target {target.get('refId')}", target["expr"])
        for panel in data_panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"variable ${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


# --- the tokenizer itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le, method) "
            '(rate(agora_rpc_duration_seconds_bucket{instance=~"$node"}[5m])))',
            {"agora_rpc_duration_seconds_bucket"},
        ),
        (
            'sum(rate(agora_rpc_requests_total{code!="OK", method="rate"}[5m])) '
            "/ sum(rate(agora_rpc_requests_total[5m]))",
            {"agora_rpc_requests_total"},
        ),
        ("count by (version, model) (agora_build_info)", {"agora_build_info"}),
        ("sum(up) without (job) or vector(0)", {"up"}),
        (
            "agora_privacy_epsilon_spent / on (instance) group_left agora_privacy_epsilon_budget * 1e3",
            {
                "agora_privacy_epsilon_spent",
                "agora_privacy_epsilon_budget",
            },
        ),
        ("increase(agora_lessons_received_total[$__range]) > 0.5", {"agora_lessons_received_total"}),
        ("rate(process_cpu_seconds_total[5m:30s]) offset 1h", {"process_cpu_seconds_total"}),
        ("label_values(agora_build_info, instance)", {"agora_build_info"}),
        ('label_values(agora_peers{state="alive"}, instance)', {"agora_peers"}),
        ("sum(rate(agora_lesons_sent_total[5m]))", {"agora_lesons_sent_total"}),
    ],
)
def test_tokenizer_finds_exactly_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_tokenizer_refuses_unbalanced_brackets() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        metric_names("sum(rate(agora_rpc_requests_total[5m])")


def test_exported_names_come_from_the_registry() -> None:
    names = exported_names()
    assert {"agora_rpc_requests_total", "agora_rpc_duration_seconds_bucket", "agora_peers"} <= names
    assert "agora_rpc_requests" not in names  # a counter is only served with _total
    assert "agora_rpc_duration_seconds_created" not in names  # metrics.py disables *_created


# --- the dashboards -------------------------------------------------------------------------------


def test_the_two_dashboards_exist() -> None:
    assert {path.name for path in DASHBOARDS} == {"agora-network.json", "agora-learning.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_query_reads_only_exported_series(path: Path) -> None:
    allowed = exported_names() | SCRAPE_SERIES
    board = load(path)
    unknown = {
        f"{where}: {name}" for where, expr in queries(board) for name in metric_names(expr) if name not in allowed
    }
    assert unknown == set()
    assert len(queries(board)) >= 10  # a dashboard whose queries went missing would pass trivially


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_shape(path: Path) -> None:
    board = load(path)
    assert board["uid"] == path.stem  # stable links and provisioning updates key on the uid
    assert board["title"].startswith("Agora / ")
    assert 36 <= board["schemaVersion"] <= 41
    panels = data_panels(board)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            # Every query follows the node picker, so selecting nodes narrows every panel.
            assert 'instance=~"$node"' in target["expr"], f"{panel['title']}: {target['expr']}"
    node = next(v for v in board["templating"]["list"] if v["name"] == "node")
    assert node["datasource"]["uid"] == DATASOURCE_UID
    assert node["query"]["query"] == "label_values(agora_build_info, instance)"


def test_network_dashboard_covers_the_overview() -> None:
    exprs = " ".join(expr for _, expr in queries(load(GRAFANA / "dashboards" / "agora-network.json")))
    for needed in (
        "up{",
        "agora_peers",
        "agora_lessons_sent_total",
        "agora_lessons_received_total",
        "agora_lessons_blocked_total",
        "agora_privacy_epsilon_spent",
        "agora_privacy_epsilon_budget",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        'code!="OK"',
        "agora_auth_rejections_total",
        "agora_teacher_failovers_total",
    ):
        assert needed in exprs, needed


def test_learning_dashboard_covers_learning() -> None:
    exprs = " ".join(expr for _, expr in queries(load(GRAFANA / "dashboards" / "agora-learning.json")))
    for needed in (
        "agora_train_loss",
        "agora_eval_accuracy",
        "agora_lessons_received_total",
        "agora_train_steps_total",
        "rate(agora_generated_tokens_total",
    ):
        assert needed in exprs, needed


# --- provisioning ---------------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert (source["uid"], source["name"], source["type"]) == (DATASOURCE_UID, "Prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_provisioning_points_at_the_mounted_folder() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "agora.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    # compose mounts deploy/grafana/dashboards/ here
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
