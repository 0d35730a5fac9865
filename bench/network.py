"""Peer network: how fast membership converges, and what mTLS costs per call.

Two figures (recorded, not asserted):
1. membership convergence for N = 16, 32 and 64 nodes in one process (one asyncio loop, mTLS,
   node 0 the only seed): wall time and gossip rounds until every node holds all N-1 others alive
   (goal: ceil(log2 N) + 2 rounds). The seed's Hello replies already carry much of the view, so
   a second figure isolates gossip: once the view is full, one node changes its card (a new
   task) and we count the rounds until every other node holds the new version. Heartbeats are
   all-to-all, O(N^2) RPCs in one process, so peers.ping_interval_s is 30 s here;
2. latency of a signed Ping between two nodes through the product's client, mTLS vs plaintext
   (median and p90), beside an unsigned gRPC health check over the same two transports.

    python -m bench.network            # full: 3 runs per N, 2000 calls per transport (a few minutes)
    python -m bench.network --quick    # 1 run per N, 300 calls (about a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import markdown_table, write_results
from bench.goals import Goal, goals_json
from node.app import Node
from node.config import load_settings
from node.peers.membership import PING
from node.peers.view import PeerState
from node.rpc.agora.v1 import peer_pb2
from node.security import channel_credentials, tls_material
from node.security.certs import CertificateAuthority

SIZES = (16, 32, 64)
GOSSIP_INTERVAL_S = {16: 0.5, 32: 0.5, 64: 1.0}  # 64 mTLS nodes on one loop need the slower pace to keep up
FANOUT = 3
PING_INTERVAL_S = 30.0  # isolates gossip: all-to-all heartbeats would be O(N^2) RPCs in this one process
CONVERGE_TIMEOUT_S = 120.0
POLL_S = 0.02
WARMUP_CALLS = 50
# The per-peer rate limit (20 calls/s by default) would refuse back-to-back Pings; the limiter still runs.
RPC_RATE_LIMIT = 100_000


def make_node(
    name: str,
    root: Path,
    seeds: list[str],
    gossip_interval_s: float,
    ca: CertificateAuthority | None,
    security: dict[str, Any] | None = None,
) -> Node:
    """A node with a fresh data dir under root; mTLS with a certificate from ca, plaintext when ca is None."""
    data_dir = root / name
    data_dir.mkdir()
    if ca is not None:
        ca.issue_node(name, data_dir / "certs", ips=("127.0.0.1",))
    settings = load_settings(
        overrides={
            "node": {
                "name": name,
                "listen": "127.0.0.1:0",
                "data_dir": str(data_dir),
                "drain_notice_s": 0,
                "shutdown_grace_s": 1,
                "log_level": "warning",
            },
            "metrics": {"enabled": False},
            "security": {"insecure": ca is None, **(security or {})},
            "peers": {
                "seeds": seeds,
                "gossip_interval_s": gossip_interval_s,
                "gossip_fanout": FANOUT,
                "ping_interval_s": PING_INTERVAL_S,
                "ping_timeout_s": 2,
                "dead_after_s": 300,
                "forget_after_s": 600,
                "rejoin_interval_s": 60,
            },
        }
    )
    return Node(settings)


def grpc_address(node: Node) -> str:
    assert node.addresses is not None, "the node is not started"
    return node.addresses.grpc


async def stop_all(nodes: list[Node]) -> None:
    await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)


def failed_hellos(node: Node) -> int:
    """Hellos this node said that failed: a seed crowded by N-1 joiners on one loop can miss their deadline."""
    return sum(
        int(sample.value)
        for metric in node.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "agora_peer_calls_total"
        and sample.labels.get("method") == "Hello"
        and sample.labels.get("code") != "OK"
    )


def full_view(nodes: list[Node]) -> bool:
    return all(len(node.view.peers(PeerState.ALIVE)) == len(nodes) - 1 for node in nodes)


async def watch_loop_lag(lags: list[float], period_s: float = 0.01) -> None:
    """How late the shared event loop wakes a sleeper: whether one process keeps up with N nodes."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        lags.append(loop.time() - due)


async def converge_once(size: int, gossip_interval_s: float, seed: int) -> dict[str, Any]:
    """Start node 0, then the other size-1 nodes at once; time until every view is full."""
    ca = CertificateAuthority()
    lags: list[float] = []
    with tempfile.TemporaryDirectory(prefix="agora-bench-network-") as tmp:
        root = Path(tmp)
        first = make_node("n0", root, [], gossip_interval_s, ca)
        nodes = [first]
        watcher = asyncio.create_task(watch_loop_lag(lags))
        try:
            await first.start()
            nodes += [make_node(f"n{i}", root, [grpc_address(first)], gossip_interval_s, ca) for i in range(1, size)]
            for index, node in enumerate(nodes):  # each node's gossip choices, reproducible per seed
                node.membership.rng = random.Random(seed * 1000 + index)
            # Node 0 may have gossiped alone before the rest came up; those rounds do not count.
            before = [node.membership.rounds for node in nodes]
            started = time.monotonic()
            await asyncio.gather(*(node.start() for node in nodes[1:]))
            seconds: float | None = None
            while time.monotonic() - started < CONVERGE_TIMEOUT_S:
                if full_view(nodes):
                    seconds = time.monotonic() - started
                    break
                await asyncio.sleep(POLL_S)
            rounds = [node.membership.rounds - base for node, base in zip(nodes, before, strict=True)]
            fewest_alive = min(len(node.view.peers(PeerState.ALIVE)) for node in nodes)
            hellos_failed = sum(failed_hellos(node) for node in nodes)
            spread = await spread_one_update(nodes) if seconds is not None else None
        finally:
            watcher.cancel()
            await stop_all(nodes)
    return {
        "nodes": size,
        "seed": seed,
        "gossip_interval_s": gossip_interval_s,
        "converged": seconds is not None,
        "seconds": seconds,
        "rounds": max(rounds),  # the most any node ran before every view was full
        "median_node_rounds": statistics.median(rounds),
        "fewest_alive_peers": fewest_alive,
        "update_spread": spread,
        "failed_hellos": hellos_failed,
        "loop_lag_max_ms": max(lags, default=0.0) * 1000,
    }


async def spread_one_update(nodes: list[Node]) -> dict[str, Any] | None:
    """The last node re-issues its card with a new task; rounds until every other node holds it."""
    changed = nodes[-1]
    before = [node.membership.rounds for node in nodes]
    changed.settings.teacher.tasks = ["word_sorting"]  # the card says what the node teaches
    issued_at = changed.membership.own_card().issued_at_unix_ms
    node_id = changed.identity.node_id
    started = time.monotonic()

    def everyone_has_it() -> bool:
        return all(
            (peer := node.view.get(node_id)) is not None and peer.card.issued_at_unix_ms >= issued_at
            for node in nodes[:-1]
        )

    while not everyone_has_it():
        if time.monotonic() - started > CONVERGE_TIMEOUT_S:
            return None
        await asyncio.sleep(POLL_S)
    rounds = [node.membership.rounds - base for node, base in zip(nodes, before, strict=True)]
    return {"seconds": time.monotonic() - started, "rounds": max(rounds)}


def summarize_convergence(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [run for run in runs if run["converged"]]
    return {
        "nodes": size,
        "gossip_interval_s": GOSSIP_INTERVAL_S[size],
        "goal_rounds": math.ceil(math.log2(size)) + 2,
        "runs": runs,
        "converged_runs": len(done),
        "median_rounds": statistics.median(r["rounds"] for r in done) if done else None,
        "max_rounds": max((r["rounds"] for r in done), default=None),
        "median_seconds": statistics.median(r["seconds"] for r in done) if done else None,
        "update_median_rounds": statistics.median(spreads) if (spreads := spread_rounds(runs)) else None,
        "update_max_rounds": max(spreads, default=None),
        "update_median_seconds": statistics.median(spread_seconds(runs)) if spread_seconds(runs) else None,
        "loop_lag_max_ms": max(r["loop_lag_max_ms"] for r in runs),
        "failed_hellos": sum(r["failed_hellos"] for r in runs),
    }


def spread_rounds(runs: list[dict[str, Any]]) -> list[int]:
    return [run["update_spread"]["rounds"] for run in runs if run.get("update_spread")]


def spread_seconds(runs: list[dict[str, Any]]) -> list[float]:
    return [run["update_spread"]["seconds"] for run in runs if run.get("update_spread")]


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    micros = [sample / 1000 for sample in samples_ns[WARMUP_CALLS:]]
    return {
        "calls": len(micros),
        "median_us": statistics.median(micros),
        "p90_us": statistics.quantiles(micros, n=10)[-1],
    }


async def rpc_latency(mtls: bool, calls: int) -> dict[str, dict[str, float]]:
    """Sequential signed Pings from A to B through A's PeerClient, then raw health checks A -> B."""
    ca = CertificateAuthority() if mtls else None
    security = {"rate_limit_per_s": RPC_RATE_LIMIT, "rate_limit_burst": RPC_RATE_LIMIT}
    with tempfile.TemporaryDirectory(prefix="agora-bench-network-") as tmp:
        root = Path(tmp)
        # Gossip every 30 s: no background traffic while the calls are timed.
        a = make_node("a", root, [], PING_INTERVAL_S, ca, security)
        nodes = [a]
        try:
            await a.start()
            b = make_node("b", root, [grpc_address(a)], PING_INTERVAL_S, ca, security)
            nodes.append(b)
            await b.start()
            deadline = time.monotonic() + 30
            while not (a.view.peers(PeerState.ALIVE) and b.view.peers(PeerState.ALIVE)):
                if time.monotonic() > deadline:
                    raise RuntimeError("nodes a and b did not see each other alive within 30 s")
                await asyncio.sleep(POLL_S)
            signed: list[int] = []
            for sequence in range(WARMUP_CALLS + calls):
                started = time.perf_counter_ns()
                await a.client.call(
                    b.identity.node_id, PING, peer_pb2.PingRequest(sequence=sequence), peer_pb2.PingReply
                )
                signed.append(time.perf_counter_ns() - started)
            raw = await raw_health_latency(a, grpc_address(b), "b" if mtls else None, calls)
        finally:
            await stop_all(nodes)
    return {"signed_ping": latency_stats(signed), "raw_health": latency_stats(raw)}


async def raw_health_latency(caller: Node, address: str, server_name: str | None, calls: int) -> list[int]:
    """Unsigned grpc.health.v1 Check calls, no agora auth: the transport's own cost."""
    if server_name is None:
        channel = aio.insecure_channel(address)
    else:
        credentials = channel_credentials(*tls_material(caller.settings))
        channel = aio.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", server_name)])
    samples: list[int] = []
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(WARMUP_CALLS + calls):
            started = time.perf_counter_ns()
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            samples.append(time.perf_counter_ns() - started)
    return samples


def overhead(mtls: dict[str, float], plain: dict[str, float]) -> str:
    ratio, extra = mtls["median_us"] / plain["median_us"], mtls["median_us"] - plain["median_us"]
    return f"{ratio:.2f}x ({extra:+.0f} us)"


def table_rows(convergence: list[dict[str, Any]], rpc: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for size in convergence:
        runs = len(size["runs"])
        title = f"full view, N={size['nodes']} (gossip every {size['gossip_interval_s']:g} s, fanout {FANOUT}, mTLS)"
        if size["converged_runs"] == 0:
            result = f"did not converge in {CONVERGE_TIMEOUT_S:g} s"
            detail = f"fewest alive peers at timeout: {min(r['fewest_alive_peers'] for r in size['runs'])}"
        else:
            result = f"{size['median_rounds']:g} rounds, {size['median_seconds']:.1f} s"
            detail = f"median of {size['converged_runs']}/{runs} converged runs; max {size['max_rounds']} rounds"
        detail += (
            f"; heartbeats every {PING_INTERVAL_S:g} s (gossip only); loop lag max {size['loop_lag_max_ms']:.0f} ms"
            + f"; {size['failed_hellos']} Hellos to the seed timed out or failed"
        )
        rows.append([title, result, f"<= {size['goal_rounds']} rounds", detail])
        if size["update_median_rounds"] is not None:
            rows.append(
                [
                    f"one changed card reaches all N={size['nodes']} by gossip alone",
                    f"{size['update_median_rounds']:g} rounds, {size['update_median_seconds']:.1f} s",
                    f"<= {size['goal_rounds']} rounds",
                    f"median of {len(spread_rounds(size['runs']))} runs; max {size['update_max_rounds']} rounds",
                ]
            )
    mtls, plain = rpc["mtls"], rpc["plaintext"]
    notes = {
        "signed_ping": f"Ed25519-signed both ways; per-peer rate limit raised to {RPC_RATE_LIMIT}/s",
        "raw_health": "unsigned, no agora auth: the transport alone",
    }
    for kind, title in (("signed_ping", "signed Ping A->B (PeerClient)"), ("raw_health", "raw health Check A->B")):
        rows.append(
            [
                f"{title}, mTLS vs plaintext",
                f"{mtls[kind]['median_us']:.0f} vs {plain[kind]['median_us']:.0f} us",
                "recorded",
                f"median; p90 {mtls[kind]['p90_us']:.0f} vs {plain[kind]['p90_us']:.0f} us; "
                + f"mTLS/plaintext {overhead(mtls[kind], plain[kind])}; {mtls[kind]['calls']:.0f} sequential calls "
                + f"after {WARMUP_CALLS} warm-up, both nodes on one event loop; {notes[kind]}",
            ]
        )
    return rows


def rounds_goal(name: str, size: dict[str, Any], median: float | None, counted: int) -> Goal:
    """Median gossip rounds against ceil(log2 N) + 2, as the table shows them. Not met unless
    every run got there (`counted` of them did): the table's median is over those runs only,
    and a run that never got there took more rounds than any goal."""
    every_run = counted == len(size["runs"])
    met = median is not None and every_run and median <= size["goal_rounds"]
    target = f"<= {size['goal_rounds']} rounds (ceil(log2 {size['nodes']}) + 2), median of runs"
    return Goal(f"{name}_n{size['nodes']}", None if median is None else float(median), target, met)


def goals(result: dict[str, Any]) -> list[Goal]:
    """Per size: rounds to a full view, and rounds for one changed card to spread. The RPC
    latencies are recorded, not judged, so they are no goals; 3 runs of whole rounds per size
    make no honest 95% interval."""
    found = []
    for size in result["convergence"]:
        runs = size["runs"]
        found.append(rounds_goal("convergence_rounds", size, size["median_rounds"], size["converged_runs"]))
        found.append(rounds_goal("update_spread_rounds", size, size["update_median_rounds"], len(spread_rounds(runs))))
    return found


async def run(runs: int, calls: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    convergence = []
    for size in SIZES:
        results = []
        for seed in range(runs):
            result = await converge_once(size, GOSSIP_INTERVAL_S[size], seed)
            took = (
                f"full view in {result['seconds']:.1f} s, {result['rounds']} rounds"
                if result["converged"]
                else ("did not converge")
            )
            spread = result["update_spread"]
            took += f"; one update spread in {spread['rounds']} rounds" if spread else "; the update did not spread"
            print(
                f"[network] N={size} seed {seed}: {took}; "
                + f"loop lag max {result['loop_lag_max_ms']:.0f} ms, {result['failed_hellos']} failed Hellos",
                file=sys.stderr,
            )
            results.append(result)
        convergence.append(summarize_convergence(size, results))
    rpc: dict[str, Any] = {}
    for mode, mtls in (("mtls", True), ("plaintext", False)):
        rpc[mode] = await rpc_latency(mtls, calls)
        ping = rpc[mode]["signed_ping"]
        print(
            f"[network] {mode}: signed Ping median {ping['median_us']:.0f} us, p90 {ping['p90_us']:.0f} us",
            file=sys.stderr,
        )
    return convergence, rpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run per N and 300 calls, instead of 3 and 2000")
    args = parser.parse_args(argv)
    logging.getLogger("agora").setLevel(logging.WARNING)
    runs, calls = (1, 300) if args.quick else (3, 2000)
    print(f"[network] N = {', '.join(map(str, SIZES))} nodes in one process, {runs} run(s) each", file=sys.stderr)
    convergence, rpc = asyncio.run(run(runs, calls))
    table = markdown_table(["figure", "result", "goal", "detail"], table_rows(convergence, rpc))
    config = {
        "quick": args.quick,
        "sizes": list(SIZES),
        "runs_per_size": runs,
        "seeds": list(range(runs)),
        "gossip_interval_s": {str(size): interval for size, interval in GOSSIP_INTERVAL_S.items()},
        "gossip_fanout": FANOUT,
        "ping_interval_s": PING_INTERVAL_S,
        "converge_timeout_s": CONVERGE_TIMEOUT_S,
        "poll_s": POLL_S,
        "rpc_calls": calls,
        "rpc_warmup_calls": WARMUP_CALLS,
        "rpc_rate_limit_per_s": RPC_RATE_LIMIT,
    }
    name = "network-quick" if args.quick else "network"
    result: dict[str, Any] = {"config": config, "convergence": convergence, "rpc": rpc}
    path = write_results(name, {**result, "goals": goals_json(goals(result))}, table)
    print(table)
    print(f"[network] results in {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
