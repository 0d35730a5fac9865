"""Prometheus instruments of one node, in a registry of its own, and the HTTP endpoint serving it.

A registry per node (not prometheus_client's global one) lets several nodes share a process, as
tests and `agora simulate` do. Later features add their instruments to NodeMetrics.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from node import __version__

log = logging.getLogger("agora.metrics")

# The *_created series double the exposition for no dashboard use; Prometheus derives resets.
disable_created_metrics()  # type: ignore[no-untyped-call]

# RPC latency buckets (seconds): sub-millisecond health checks up to multi-minute generations.
RPC_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class NodeMetrics:
    """Every instrument a node exports, registered in ``self.registry``."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.in_flight = 0  # agora_rpc_in_flight as a plain number, for the node's card and Ping replies
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Gauge(
            "agora_build_info",
            "Always 1; labels carry the Agora version and the hosted model.",
            ["version", "model"],
            registry=self.registry,
        )
        self.build_info.labels(version=__version__, model=model).set(1)
        self.rpc_requests = Counter(
            "agora_rpc_requests",
            "gRPC calls served, by service, method and final status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "agora_rpc_duration_seconds",
            "Time to serve a gRPC call, from receipt to final status.",
            ["service", "method"],
            buckets=RPC_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpc_in_flight = Gauge(
            "agora_rpc_in_flight",
            "gRPC calls being served right now.",
            registry=self.registry,
        )
        self.auth_rejections = Counter(
            "agora_auth_rejections",
            "Calls refused by authentication, the allow-list or the rate limit, and relayed cards refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.peers = Gauge(
            "agora_peers",
            "Peers in this node's view, by state (alive, suspect, dead).",
            ["state"],
            registry=self.registry,
        )
        self.gossip_rounds = Counter(
            "agora_gossip_rounds",
            "Gossip rounds this node has run.",
            registry=self.registry,
        )
        self.peer_calls = Counter(
            "agora_peer_calls",
            "Calls this node made to peers, by method and final status code (after retries).",
            ["method", "code"],
            registry=self.registry,
        )

        self.lessons_sent = Counter(
            "agora_lessons_sent",
            "Lessons this teacher released, by kind and task.",
            ["kind", "task"],
            registry=self.registry,
        )
        self.lessons_blocked = Counter(
            "agora_lessons_blocked",
            "Lessons the leakage guard kept from leaving, by the check that blocked them.",
            ["reason"],
            registry=self.registry,
        )
        self.lessons_received = Counter(
            "agora_lessons_received",
            "Verified lessons this student received from teachers, by kind and task.",
            ["kind", "task"],
            registry=self.registry,
        )
        self.train_steps = Counter(
            "agora_train_steps",
            "Learning updates this student applied, by algorithm.",
            ["algorithm"],
            registry=self.registry,
        )
        self.train_loss = Gauge(
            "agora_train_loss", "Training loss of the student's last update.", registry=self.registry
        )
        self.eval_accuracy = Gauge(
            "agora_eval_accuracy",
            "The student's accuracy at its last held-out evaluation, by task and split (seen, unseen).",
            ["task", "split"],
            registry=self.registry,
        )
        self.teacher_failovers = Counter(
            "agora_teacher_failovers",
            "Lesson calls a student moved to another teacher (or backed off) because one failed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.privacy_refusals = Counter(
            "agora_privacy_refusals",
            "Releases refused because they would exceed a privacy budget, by scope (node, recipient).",
            ["scope"],
            registry=self.registry,
        )
        self.epsilon_spent = Gauge(
            "agora_privacy_epsilon_spent",
            "Epsilon this teacher has spent, composed by its accountant at privacy.delta.",
            registry=self.registry,
        )
        self.epsilon_budget = Gauge(
            "agora_privacy_epsilon_budget",
            "Epsilon this teacher may spend in all (privacy.epsilon_budget).",
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "agora_generated_tokens",
            "Tokens the hosted model generated.",
            registry=self.registry,
        )


class MetricsServer:
    """Serves a registry on ``/metrics`` over HTTP from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._httpd, self._thread = start_http_server(self._port, addr=self._host, registry=self._registry)

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("metrics server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
