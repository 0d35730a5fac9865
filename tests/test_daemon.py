"""`agora run` as a real process: health, reflection, metrics, logs and a clean SIGTERM exit."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from node.client import list_services
from node.process import NodeProcess, StartedNode

GRACE_S = 5.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeProcess, StartedNode]]:
    process = NodeProcess(
        ["--name", "itest", "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--roles", "teacher", "--data-dir", str(tmp_path / "data"), "--set", f"node.shutdown_grace_s={GRACE_S}"],
        log_path=tmp_path / "node.log",
    )  # fmt: skip
    started = process.start()
    yield process, started
    process.kill()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_node_serves_health_reflection_and_metrics_then_drains(node: tuple[NodeProcess, StartedNode]) -> None:
    process, started = node
    assert started.name == "itest"
    assert started.metrics_url is not None

    with grpc.insecure_channel(started.address) as channel:
        # The standard health client: the node and each of its services are SERVING.
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agora.v1.Teacher", "agora.v1.Peer"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Server reflection lists the services.
    assert list_services(started.address) == [
        "agora.v1.Peer",
        "agora.v1.Teacher",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]

    # /metrics counts exactly those calls.
    samples = scrape(started.metrics_url)
    check = ("agora_rpc_requests_total", (("code", "OK"), ("method", "Check"), ("service", "grpc.health.v1.Health")))
    info = (
        "agora_rpc_requests_total",
        (("code", "OK"), ("method", "ServerReflectionInfo"), ("service", "grpc.reflection.v1alpha.ServerReflection")),
    )
    assert samples[check] == 3
    assert samples[info] == 1
    assert (
        samples[("agora_rpc_duration_seconds_count", (("method", "Check"), ("service", "grpc.health.v1.Health")))] == 3
    )
    assert any(name == "agora_build_info" for name, _ in samples)

    # SIGTERM: a clean exit (code 0) within the grace period, saying so in the log.
    began = time.monotonic()
    assert process.terminate(timeout_s=GRACE_S + 10) == 0
    assert time.monotonic() - began < GRACE_S + 10
    events = [record.get("event") for record in process.log_records()]
    assert events.count("node_started") == 1
    assert events[-1] == "node_stopped"


def test_startup_line_is_json_with_name_address_and_roles(node: tuple[NodeProcess, StartedNode]) -> None:
    process, started = node
    record = next(r for r in process.log_records() if r.get("event") == "node_started")
    assert record["level"] == "info"
    assert record["roles"] == ["teacher"]
    assert record["address"] == started.address
    assert "itest" in str(record["message"]) and started.address in str(record["message"])


def test_a_taken_port_is_a_clear_error(node: tuple[NodeProcess, StartedNode], tmp_path: Path) -> None:
    _, started = node
    second = NodeProcess(
        [
            "--insecure",
            "--listen",
            started.address,
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "b"),
        ],
        log_path=tmp_path / "second.log",
    )
    with pytest.raises(RuntimeError, match="exited with code 1"):
        second.start(timeout_s=30)
    assert f"cannot listen on {started.address}" in second.log_tail()
    assert "Traceback" not in second.log_tail()
