"""Three `agora run` processes on three "hosts" (Linux network namespaces on one bridge) join over mTLS.

Loopback tests share one network stack, so they cannot show that a node works when its peers are
really elsewhere: that it advertises its own interface address, that certificates are verified
against IP and DNS names that differ per host, and that a `dns:///NAME:PORT` seed reaches every
address the name resolves to (as a Kubernetes headless service lists each pod). Here each node has
its own namespace, its own address and the same port 50051; node b joins through node a's address,
node c through a name that resolves to both a and b; all three must converge to a full, alive view.

Needs root and iproute2's `ip netns`; skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.netns import bridged_namespaces, netns_unavailable
from node.process import NodeProcess
from node.rpc.agora.v1 import node_pb2
from node.store import SavedView, StoreError, read_saved_view

PORT = 50051
METRICS_PORT = 9464
SEED_NAME = "agora-seeds"
CONVERGE_S = 30.0
FAST_PEERS = [
    "peers.gossip_interval_s=0.3",
    "peers.ping_interval_s=0.3",
    "peers.ping_timeout_s=1",
    "peers.dead_after_s=3",
    "peers.forget_after_s=30",
]


@dataclass
class Host:
    """One namespace with one node in it."""

    name: str  # the node's name
    netns: str
    ip: str
    data_dir: Path
    process: NodeProcess

    @property
    def address(self) -> str:
        return f"{self.ip}:{PORT}"


def agora(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as an operator runs it."""
    result = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"`agora {' '.join(args)}` exited {result.returncode}:\n{result.stderr}"
    return result


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    # No proxy: an http_proxy in the environment must not take 10.77.X.Y off to another machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        text: str = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def read_view(host: Host) -> SavedView | None:
    try:
        return read_saved_view(host.data_dir)
    except StoreError:
        return None  # not created yet


def view_problems(hosts: list[Host], ids: dict[str, str]) -> list[str]:
    """What keeps each node's saved view from being exactly the other two, alive, at their own
    addresses and ids (empty when converged)."""
    problems = []
    for host in hosts:
        view = read_view(host)
        if view is None:
            problems.append(f"{host.name}: no saved view yet")
            continue
        own_id = node_pb2.NodeCard.FromString(view.own_card).node_id
        if own_id != ids[host.name]:
            problems.append(f"{host.name}: own card has node_id {own_id}, startup line said {ids[host.name]}")
        seen = {(p.name, p.node_id, p.address, p.state) for p in view.peers}
        wanted = {(o.name, ids[o.name], o.address, "alive") for o in hosts if o is not host}
        if seen != wanted:
            problems.append(f"{host.name}: view {sorted(seen)}, want {sorted(wanted)}")
        if host.process.process is not None and host.process.process.poll() is not None:
            problems.append(f"{host.name}: exited with code {host.process.process.returncode}")
    return problems


def logs(hosts: list[Host]) -> str:
    return "\n".join(f"--- {h.name} log ---\n{h.process.log_tail(30)}" for h in hosts)


@pytest.mark.timeout(120)
def test_three_nodes_in_separate_network_namespaces_converge_over_mtls(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)

    with bridged_namespaces(["a", "b", "c"]) as spaces:
        # Node c's namespace resolves the seed name to both a and b, like a headless service
        # (`ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts for the node).
        hosts_dir = Path("/etc/netns") / spaces["c"].netns
        hosts_dir.mkdir(parents=True, exist_ok=True)
        (hosts_dir / "hosts").write_text(
            f"127.0.0.1 localhost\n{spaces['a'].ip} {SEED_NAME}\n{spaces['b'].ip} {SEED_NAME}\n"
        )

        agora("certs", "init-ca", "--out", str(tmp_path / "ca"))
        seeds = {"a": [], "b": [f"{spaces['a'].ip}:{PORT}"], "c": [f"dns:///{SEED_NAME}:{PORT}"]}
        hosts: list[Host] = []
        for letter in "abc":
            name, address, data_dir = f"ns-{letter}", spaces[letter].ip, tmp_path / f"ns-{letter}"
            # An IP SAN for dialling by address (b's seed), the seed name for c's dns:/// seed;
            # the node name is added as a DNS SAN for peers learned by gossip.
            agora("certs", "issue", "--ca", str(tmp_path / "ca"), "--name", name, "--dns", SEED_NAME,
                  "--ip", address, "--out", str(data_dir / "certs"))  # fmt: skip
            args = ["--name", name, "--listen", f"{address}:{PORT}", "--metrics-listen", f"{address}:{METRICS_PORT}",
                    "--data-dir", str(data_dir)]  # fmt: skip
            for setting in [*FAST_PEERS, f"peers.seeds={json.dumps(seeds[letter])}"]:
                args += ["--set", setting]
            # `ip netns exec` execs the node in place: the pid, signals and exit code are the node's.
            process = NodeProcess(args, tmp_path / f"{name}.log", prefix=spaces[letter].prefix())
            hosts.append(Host(name, spaces[letter].netns, address, data_dir, process))
        a, b, c = hosts

        try:
            # In order, so that each node's seeds are serving when it first says Hello.
            for host in hosts:
                started = host.process.start()
                assert started.address == host.address, f"{host.name} listens on {started.address}\n{logs(hosts)}"
            ids = {host.name: host.process.node_id() for host in hosts}
            assert len(set(ids.values())) == 3, f"node ids are not distinct: {ids}"

            deadline = time.monotonic() + CONVERGE_S
            problems = view_problems(hosts, ids)
            while problems and time.monotonic() < deadline:
                time.sleep(0.3)
                problems = view_problems(hosts, ids)
            assert not problems, (
                f"no full alive view within {CONVERGE_S:.0f}s:\n" + "\n".join(problems) + "\n" + logs(hosts)
            )

            # c's seed name resolved to two addresses and c said Hello to both: c counts two
            # answered Hellos, and b, which is no one else's seed, served one.
            hello_failures = [
                r["message"] for r in c.process.log_records() if str(r.get("message", "")).startswith("Hello to")
            ]
            assert not hello_failures, f"ns-c's Hellos to its seeds failed: {hello_failures}\n{logs(hosts)}"
            _, c_metrics = scrape(f"http://{c.ip}:{METRICS_PORT}/metrics")
            c_hellos = c_metrics.get(("agora_peer_calls_total", (("code", "OK"), ("method", "Hello"))), 0.0)
            assert c_hellos >= 2, f"ns-c made {c_hellos:g} answered Hellos, want one per seed address\n{logs(hosts)}"
            _, b_metrics = scrape(f"http://{b.ip}:{METRICS_PORT}/metrics")
            b_served = b_metrics.get(
                ("agora_rpc_requests_total", (("code", "OK"), ("method", "Hello"), ("service", "agora.v1.Peer"))), 0.0
            )
            assert b_served >= 1, f"ns-b served no Hello: ns-c never reached it through {SEED_NAME}\n{logs(hosts)}"

            # Every node's metrics, scraped across the bridge from the root namespace.
            for host in hosts:
                text, _ = scrape(f"http://{host.ip}:{METRICS_PORT}/metrics")
                assert 'agora_peers{state="alive"} 2.0' in text, (
                    f"{host.name} metrics: {[line for line in text.splitlines() if line.startswith('agora_peers')]}"
                )

            # What an operator sees: `agora peers` on a's data dir lists b and c as alive.
            table = agora("peers", "--set", f"node.data_dir={a.data_dir}").stdout
            for other in (b, c):
                rows = [line.split() for line in table.splitlines() if line.split()[:1] == [other.name]]
                assert rows and "alive" in rows[0] and other.address in rows[0], f"`agora peers` said:\n{table}"
        finally:
            for host in hosts:
                host.process.kill()
