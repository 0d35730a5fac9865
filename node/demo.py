"""`make demo`: three real nodes join a network over mTLS from config alone; one is killed and
comes back. Every step uses what an operator uses: `agora certs`, `agora run`, `agora peers`.

Teachers, students and `agora simulate` (a whole teaching network) extend it with later issues.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc

from node import __version__
from node.client import check_health
from node.process import NodeProcess, NodeProcessError
from node.rpc.agora.v1 import teacher_pb2, teacher_pb2_grpc
from node.security import channel_credentials
from node.store import saved_peer_states

STEPS = 6
NAMES = ("alice", "bob", "carol")
# Demo timings, so that a crash shows within seconds (defaults: heartbeats every 1 s, suspect
# after 3 misses, dead after 15 s, gossip every 2 s).
PEERS = {
    "gossip_interval_s": 0.5,
    "ping_interval_s": 0.25,
    "ping_timeout_s": 1.0,
    "suspect_after_missed": 2,
    "dead_after_s": 2.5,
    "rejoin_interval_s": 2.0,
}


def _step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def _agora(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=120)


def _wait(condition: Callable[[], bool], timeout_s: float) -> float | None:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            return None
        time.sleep(0.05)
    return time.monotonic() - began


class DemoNetwork:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.processes: dict[str, NodeProcess] = {}

    def data_dir(self, name: str) -> Path:
        return self.work_dir / name

    def make_certificates(self) -> None:
        ca = self.work_dir / "ca"
        for args in (["init-ca", "--out", str(ca)],
                     *(["issue", "--ca", str(ca), "--name", n, "--ip", "127.0.0.1", "--out",
                        str(self.data_dir(n) / "certs")] for n in (*NAMES, "operator"))):  # fmt: skip
            done = _agora("certs", *args)
            if done.returncode != 0:
                raise NodeProcessError(f"agora certs {args[0]} failed: {done.stderr.strip()}")

    def start(self, name: str, seeds: list[str]) -> NodeProcess:
        overrides = [f"peers.{k}={v}" for k, v in PEERS.items()] + [f"peers.seeds={seeds!r}"]
        # alice teaches arithmetic; bob and carol learn it (roles and tasks travel in their cards).
        overrides += (
            ["node.roles=[teacher]", "teacher.tasks=[arithmetic]"] if name == "alice" else ["node.roles=[student]"]
        )
        process = NodeProcess(
            ["--name", name, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--data-dir", str(self.data_dir(name)), *(p for o in overrides for p in ("--set", o))],
            log_path=self.work_dir / f"{name}-{len(self.processes)}.log",
        )  # fmt: skip
        process.start()
        self.processes[name] = process
        return process

    def states(self, observer: str) -> dict[str, str]:
        """peer name -> state in the view ``observer`` saved last ({} before its first save)."""
        return saved_peer_states(self.data_dir(observer))

    def credentials(self) -> grpc.ChannelCredentials:
        certs = self.data_dir("operator") / "certs"
        ca, cert, key = ((certs / f).read_bytes() for f in ("ca.crt", "node.crt", "node.key"))
        return channel_credentials(ca, cert, key)

    def stop_all(self) -> list[int]:
        return [process.terminate() for process in self.processes.values()]


def _unsigned_lesson_request(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    options = [("grpc.ssl_target_name_override", "alice")]
    channel = (
        grpc.secure_channel(address, credentials, options=options) if credentials else grpc.insecure_channel(address)
    )
    with channel:
        try:
            teacher_pb2_grpc.TeacherStub(channel).Instruct(teacher_pb2.InstructRequest(task="arithmetic"), timeout=5)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "OK"


def run_demo(work_dir: Path) -> int:
    print(f"Agora {__version__} demo: three nodes join a network over mTLS; one is killed and comes back.\n")
    network = DemoNetwork(work_dir)
    _step(1, "certificates: `agora certs init-ca`, then `agora certs issue` for alice, bob, carol")
    network.make_certificates()
    _step(2, "starting alice, then bob and carol with peers.seeds = [alice]")
    alice = network.start("alice", [])
    assert alice.started is not None
    for name in ("bob", "carol"):
        network.start(name, [alice.started.address])
    for name, process in network.processes.items():
        assert process.started is not None
        print(f"      {name:<6} {process.started.address:<16} metrics {process.started.metrics_url}")

    everyone = set(NAMES)
    took = _wait(lambda: all(network.states(n) == dict.fromkeys(everyone - {n}, "alive") for n in NAMES), 30)
    if took is None:
        print("      membership did not converge in 30s; see the logs in " + str(work_dir), file=sys.stderr)
        return 1
    _step(3, f"every node sees the other two alive after {took:.1f}s; `agora peers` on alice:")
    table = _agora("peers", "--set", f"node.data_dir={network.data_dir('alice')}").stdout
    print("\n".join(f"      {line}" for line in table.splitlines()))

    _step(4, "who may call: mTLS, then a signed envelope on every call")
    operator = network.credentials()
    health = check_health(alice.started.address, credentials=operator, server_name="alice")
    print(f"      health with a network certificate: {health.status}")
    no_certificate = _unsigned_lesson_request(alice.started.address, None).split(":")[0]
    print(f"      a lesson request without a client certificate -> {no_certificate} (refused by the TLS handshake)")
    unsigned = _unsigned_lesson_request(alice.started.address, operator)
    print(f"      with a certificate but no signed envelope -> {unsigned}")
    assert alice.started.metrics_url is not None
    with urllib.request.urlopen(alice.started.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    for line in metrics.splitlines():
        if line.startswith(("agora_peers{", 'agora_auth_rejections_total{reason="missing_envelope"}')):
            print(f"      {line}")

    carol = network.processes["carol"]
    carol_id = carol.node_id()
    carol.kill()
    _step(5, "kill -9 carol")
    suspect = _wait(lambda: network.states("alice").get("carol") in ("suspect", "dead"), 15)
    dead = _wait(lambda: network.states("alice").get("carol") == "dead", 15)
    print(f"      alice marks carol suspect after {suspect or 0:.1f}s (2 missed heartbeats of 0.25s), "
          f"then dead {dead or 0:.1f}s later (peers.dead_after_s = 2.5)")  # fmt: skip

    restarted = network.start("carol", [alice.started.address])
    back = _wait(lambda: all(network.states(n).get("carol") == "alive" for n in ("alice", "bob")), 20)
    again = restarted.node_id()
    _step(6, f"carol restarts from its data dir: alive again everywhere after {back or 0:.1f}s, "
             f"same node id ({'yes' if again == carol_id else 'NO'}: {again[:12]}…)")  # fmt: skip
    codes = network.stop_all()
    print(f"      SIGTERM to all three -> exit codes {', '.join(map(str, codes))}")
    print(
        '\nNext: README.md, "Teaching and privacy" (a teacher) and "Learning (students)" (`agora learn`); '
        "`agora simulate` arrives next."
    )
    return 0 if back is not None and again == carol_id and codes == [0, 0, 0] else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agora-demo-") as raw:
        network_dir = Path(raw)
        try:
            return run_demo(network_dir)
        except NodeProcessError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
