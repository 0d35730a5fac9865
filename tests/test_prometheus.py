"""The metrics endpoints against the real Prometheus tools (Debian's package, which `make test`
installs): three nodes on loopback (a teacher as seed, a student and a node of both roles that
teaches nothing) joined into one network; a real `prometheus` server, on a port and data dir of
its own, scrapes all three, and its HTTP API answers with each node's agora_* series; and
`promtool check metrics` accepts every node's exposition without a complaint."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from grpc import aio

from node import __version__
from node.app import Node
from node.rpc.agora.v1 import teacher_pb2
from tests.nodes import FAST_PEERS, loopback_settings, running_node
from tests.teachers import Student, teacher_settings

T = TypeVar("T")
NAMES = ("teacher", "student", "both")
WAIT_S = 60.0  # generous bounds for a loaded 2-core CI machine; the waits end as soon as they hold


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """The paths of prometheus and promtool; the tests fail (before starting any node) without them."""
    paths = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: `make test` installs Debian's prometheus package")
    return {name: str(path) for name, path in paths.items()}


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def wait_for(probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something other than None; fail saying what was awaited
    and the last thing seen (a value or an error) when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = probe()
            if result is not None:
                return result
        except (OSError, ValueError) as exc:  # not listening yet, or an HTTP error
            last = exc
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s:g}s (last seen: {last!r})")
        time.sleep(0.25)


def sample(text: str, line_prefix: str) -> float | None:
    """The value of the first exposition line starting with ``line_prefix``."""
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def sees_two_alive(metrics_url: str) -> bool | None:
    return sample(fetch(metrics_url).decode(), 'agora_peers{state="alive"}') == 2 or None


@pytest.fixture(scope="module")
def network(tools: dict[str, str]) -> Iterator[dict[str, tuple[str, str]]]:
    """Three joined nodes, each with peer calls served and made and (the teacher) a lesson
    released, so that labelled families have series; yields name -> (metrics URL, model label)."""
    teacher = Node(teacher_settings(node={"name": "teacher"}, peers=FAST_PEERS))
    with ExitStack() as stack:
        seed = stack.enter_context(running_node(teacher))
        others = [
            Node(loopback_settings(node={"name": name, "roles": roles}, peers={**FAST_PEERS, "seeds": [seed.grpc]}))
            for name, roles in (("student", ["student"]), ("both", ["teacher", "student"]))
        ]
        urls = {"teacher": seed.metrics_url}
        for node in others:
            urls[node.settings.node.name] = stack.enter_context(running_node(node)).metrics_url
        assert all(urls.values()), f"a node serves no metrics: {urls}"
        metrics_urls = {name: str(url) for name, url in urls.items()}
        for name, url in metrics_urls.items():
            wait_for(partial(sees_two_alive, url), f'agora_peers{{state="alive"}} == 2 on {name}')
        asyncio.run(demonstrate(seed.grpc))
        models = {"teacher": teacher.model_label} | {node.settings.node.name: node.model_label for node in others}
        yield {name: (url, models[name]) for name, url in metrics_urls.items()}


async def demonstrate(address: str) -> None:
    """One Demonstrate call, so the teacher's lesson and generation families have series."""
    async with aio.insecure_channel(address) as channel:
        student = Student(channel)
        await student.hello(channel)
        sampling = teacher_pb2.SamplingParams(max_new_tokens=4, temperature=1.0, seed=3)
        request = teacher_pb2.DemonstrateRequest(
            task="arithmetic", prompts=["Q: (1 + 2) =\nAnswer: "], sampling=sampling
        )
        await student.call("Demonstrate", request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """A `prometheus` server of this test's own (config, TSDB dir, loopback port), stopped on exit."""

    def __init__(self, binary: str, directory: Path, targets: dict[str, str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # JSON is YAML: one job, a 1 s scrape interval, and each node's name as a target label.
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "agora",
                    "static_configs": [
                        {"targets": [target], "labels": {"node": name}} for name, target in targets.items()
                    ],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = json.loads(fetch(f"{self.url}/api/v1/{path}{query}"))
        assert reply["status"] == "success", reply
        return reply["data"]

    def ready(self) -> bool | None:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
        return fetch(f"{self.url}/-/ready") is not None or None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def test_prometheus_scrapes_every_node_and_serves_their_agora_series(
    tools: dict[str, str], network: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    """Every node is a healthy target, and the API returns its agora_build_info (1, this
    version, its model) and agora_peers{state="alive"} (2: the two other nodes), per instance."""
    instances = {name: urllib.parse.urlsplit(url).netloc for name, (url, _) in network.items()}
    server = Prometheus(tools["prometheus"], tmp_path, instances)
    try:
        wait_for(server.ready, f"prometheus ready on {server.url}")

        def targets_up() -> dict[str, str] | None:
            health = {t["labels"]["instance"]: t["health"] for t in server.api("targets")["activeTargets"]}
            return health if health == {instance: "up" for instance in instances.values()} else None

        wait_for(targets_up, f"all three targets up in {server.url}/api/v1/targets")

        def series(query: str) -> dict[str, dict[str, Any]] | None:
            """``query``'s series by instance, once there is one for every node."""
            result = {s["metric"]["instance"]: s for s in server.api("query", query=query)["result"]}
            return result if set(result) == set(instances.values()) else None

        build = wait_for(lambda: series("agora_build_info"), "agora_build_info of every node")
        peers = wait_for(lambda: series('agora_peers{state="alive"}'), "agora_peers of every node")
        for name, instance in instances.items():
            labels, value = build[instance]["metric"], build[instance]["value"][1]
            assert (labels["node"], labels["job"], value) == (name, "agora", "1"), build[instance]
            assert (labels["version"], labels["model"]) == (__version__, network[name][1]), labels
            assert peers[instance]["value"][1] == "2", (name, peers[instance])
        # Counters arrive with their _total suffix, the histogram with its buckets.
        for query in ("agora_rpc_requests_total", "agora_gossip_rounds_total", "agora_rpc_duration_seconds_bucket"):
            wait_for(partial(series, query), f"{query} of every node")
    finally:
        server.stop()


@pytest.mark.parametrize("name", NAMES)
def test_promtool_accepts_the_metrics_of_each_role(
    tools: dict[str, str], network: dict[str, tuple[str, str]], name: str
) -> None:
    """`promtool check metrics` (exposition format and naming lint) prints nothing and exits 0."""
    text = fetch(network[name][0])
    assert b"agora_build_info" in text
    if name == "teacher":  # the lesson families have series, so promtool sees their samples too
        assert b"agora_lessons_sent_total{" in text and b"agora_generated_tokens_total" in text
    checked = subprocess.run(
        [tools["promtool"], "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    complaints = (checked.stdout + checked.stderr).decode(errors="replace").strip()
    assert checked.returncode == 0 and not complaints, f"promtool check metrics on {name}:\n{complaints}"
