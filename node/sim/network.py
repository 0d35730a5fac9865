"""The simulated network: a CA and a certificate per node, one data dir and config file each, and
one real OS process per node (`agora run` for teachers, `agora learn` for students).

Each node keeps one address for the whole run (a free loopback port picked up front, or its own
namespace's IP on port 50051), so a node restarted after a kill comes back where its peers
expect it, as a real host would. Its config is written to `<out>/nodes/<name>/agora.yaml`, so
any node can be rerun by hand with the same command the simulation used.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node.netns import Host
from node.process import NodeProcess, StartedNode
from node.security.certs import CertificateAuthority
from node.sim.config import SimConfig, SimNode
from node.store import StoreError, read_rows, saved_peer_states

NETNS_PORT, NETNS_METRICS_PORT = 50051, 9464
# Quick failure detection, so that a kill shows within seconds (defaults: heartbeats every 1 s,
# suspect after 3 misses, dead after 15 s, gossip every 2 s).
PEERS: dict[str, Any] = {
    "gossip_interval_s": 0.5,
    "ping_interval_s": 0.5,
    "ping_timeout_s": 2.0,
    "suspect_after_missed": 3,
    "dead_after_s": 4.0,
    "rejoin_interval_s": 1.0,
}


@dataclass(frozen=True)
class TeacherAssets:
    """What the teacher nodes load: the model, R_phi for TnD, private data and canaries."""

    model: Path
    age_predictor: Path | None
    private_data: Path | None  # JSONL of the task's {input, output} records, canary included
    canaries_file: Path
    train_steps: int | None = None  # the TnD teacher's training steps (its age: a demonstration's reward)


@dataclass
class SimulatedNode:
    spec: SimNode
    index: int  # 1-based among students and baselines: the student's seed offset
    data_dir: Path
    address: str
    metrics_address: str
    host: Host | None
    process: NodeProcess | None = None
    started_at: float = 0.0  # time.monotonic() of the last start
    logs: list[Path] = field(default_factory=list)  # one per start

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def learns(self) -> bool:
        return self.spec.role in ("student", "baseline")

    @property
    def config_path(self) -> Path:
        return self.data_dir / "agora.yaml"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def starts(self) -> int:
        return len(self.logs)

    @property
    def exit_code(self) -> int | None:
        """The last process's exit code once it has ended (-9 after a kill), else None."""
        return None if self.process is None else self.process.poll()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the node's store; [] while it has none (or not that table yet)."""
        try:
            return read_rows(self.data_dir, sql)
        except StoreError:
            return []


def _free_port(taken: set[int]) -> int:
    """A loopback port free now and not handed out before in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def baseline_student(algorithm: str) -> dict[str, Any]:
    """The no-teacher control of an algorithm: the same student, no lesson ever asked."""
    if algorithm == "tnd":
        return {"algorithm": "tnd", "tnd_mode": "clm_only"}  # every step a CLM step on the corpus
    return {"algorithm": "sft"}  # gold SFT on the student's own data


class SimNetwork:
    """The nodes of one simulation under `out`, started and stopped as real processes."""

    def __init__(self, config: SimConfig, out: Path, hosts: dict[str, Host] | None = None) -> None:
        self.config, self.out, self.hosts = config, out, hosts
        self.nodes: dict[str, SimulatedNode] = {}
        learner, taken = 0, set[int]()
        for spec in config.node_list():
            learner += spec.role != "teacher"
            host = hosts[spec.name] if hosts else None
            address = f"{host.ip}:{NETNS_PORT}" if host else f"127.0.0.1:{_free_port(taken)}"
            metrics = f"{host.ip}:{NETNS_METRICS_PORT}" if host else f"127.0.0.1:{_free_port(taken)}"
            index = learner if spec.role != "teacher" else 0
            self.nodes[spec.name] = SimulatedNode(spec, index, out / "nodes" / spec.name, address, metrics, host)

    # --- setup -------------------------------------------------------------------------------

    def make_certificates(self) -> None:
        """One CA for the run, one certificate per node naming its address (the CA key stays in out/ca)."""
        authority = CertificateAuthority("agora-simulation-ca", days=30)
        authority.save(self.out / "ca")
        for node in self.nodes.values():
            ip = node.address.rsplit(":", 1)[0]
            authority.issue_node(node.name, node.data_dir / "certs", (), (ip,), days=30)

    def write_configs(self, teacher: TeacherAssets) -> None:
        for node in self.nodes.values():
            settings = self.settings(node, teacher)
            node.config_path.parent.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")

    def settings(self, node: SimulatedNode, teacher: TeacherAssets) -> dict[str, Any]:
        """The node's agora settings: the simulation's choices, then its own `settings` from sim.yaml."""
        c = self.config
        seeds = [other.address for other in self.nodes.values() if other is not node]
        settings: dict[str, Any] = {
            "node": {
                "name": node.name,
                "roles": ["teacher"] if node.role == "teacher" else ["student"],
                "listen": node.address if node.host is None else f"0.0.0.0:{NETNS_PORT}",
                "advertise": node.address,
                "data_dir": str(node.data_dir),
                "drain_notice_s": 0.0,
                "shutdown_grace_s": 5.0,
            },
            "metrics": {"listen": node.metrics_address if node.host is None else f"0.0.0.0:{NETNS_METRICS_PORT}"},
            "peers": {**PEERS, "seeds": seeds},
            "privacy": {"epsilon_budget": c.epsilon_budget, "canaries_file": str(teacher.canaries_file)},
        }
        if node.role == "teacher":
            settings["model"] = {"source": str(teacher.model)}
            settings["teacher"] = {"tasks": [c.task]}
            if teacher.age_predictor is not None:
                settings["teacher"]["age_predictor"] = str(teacher.age_predictor)
            if teacher.private_data is not None:
                settings["teacher"]["private_data"] = {c.task: str(teacher.private_data)}
        else:
            student: dict[str, Any] = {
                "task": c.task,
                "algorithm": c.algorithm,
                "steps": c.steps,
                "eval_every": c.eval_every,
                "checkpoint_every": c.eval_every,
                "eval_n": c.eval_n,
                "seed": c.seed + node.index,
                # a teacher that is down (killed, restarting) is waited for, not given up on
                "teacher_wait_s": 300.0,
            }
            if c.algorithm == "tnd" and teacher.train_steps is not None:
                student["tnd_teacher_steps"] = teacher.train_steps
            student.update(c.students())
            if node.role == "baseline":
                student.update(baseline_student(c.algorithm))
                student["seed"] = c.seed + 1  # the first student's seed: the same start, no teacher
            settings["student"] = student
        for section, values in node.spec.settings.items():
            settings.setdefault(section, {}).update(values)
        return settings

    # --- processes ---------------------------------------------------------------------------

    def start(self, name: str, timeout_s: float = 120.0) -> StartedNode:
        self.launch(name)
        return self.wait_until_serving(name, timeout_s)

    def launch(self, name: str) -> None:
        node = self.nodes[name]
        log = self.out / "logs" / f"{name}-{node.starts + 1}.log"
        node.process = NodeProcess(
            ["--config", str(node.config_path)],
            log_path=log,
            env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
            prefix=node.host.prefix() if node.host else None,
            command="learn" if node.learns else "run",
        )
        node.logs.append(log)
        node.started_at = time.monotonic()
        node.process.launch()

    def wait_until_serving(self, name: str, timeout_s: float = 120.0) -> StartedNode:
        process = self.nodes[name].process
        assert process is not None
        return process.wait_until_serving(timeout_s)

    def kill(self, name: str) -> None:
        process = self.nodes[name].process
        if process is not None:
            process.kill()

    def stop(self, name: str) -> None:
        node = self.nodes[name]
        if node.running and node.process is not None:
            node.process.terminate()

    def stop_all(self) -> None:
        for name in reversed(self.nodes):
            try:
                self.stop(name)
            except Exception:  # cleanup must reach every node
                self.kill(name)

    # --- membership --------------------------------------------------------------------------

    def sees_everyone(self, name: str) -> bool:
        """Whether the node's saved view holds every other running node alive."""
        others = {other.name for other in self.nodes.values() if other.name != name and other.running}
        states = saved_peer_states(self.nodes[name].data_dir)
        return all(states.get(other) == "alive" for other in others)

    def seen_alive_by_all(self, name: str) -> bool:
        """Whether every other running node's saved view holds this node alive."""
        return all(
            saved_peer_states(other.data_dir).get(name) == "alive"
            for other in self.nodes.values()
            if other.name != name and other.running
        )
