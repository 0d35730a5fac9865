"""`agora simulate`, top to bottom: teacher model, certificates, nodes, learning with live progress
and injected faults, then the report. Every node is a real process speaking mTLS gRPC; this
module only starts, watches and kills them, as an operator would.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node import __version__
from node.config import ConfigError
from node.machine import machine
from node.netns import Host, bridged_namespaces, netns_unavailable
from node.process import NodeProcessError, read_log_records
from node.sim.config import SimConfig
from node.sim.faults import FaultSchedule
from node.sim.network import SimNetwork, TeacherAssets
from node.sim.progress import progress_line, snapshot
from node.sim.report import ReportFiles, fmt_pct, write_report
from node.sim.results import node_result, secret_sharer, totals
from node.sim.teacher_prep import prepare_teacher, simulation_canary

STAGES = 6
PROGRESS_EVERY_S = 10.0  # a progress block (one line per node) this often
JOIN_TIMEOUT_S = 60.0
Say = Callable[[str], None]


class SimulationError(RuntimeError):
    """The simulation could not run to its end; the message says what and where to look."""


@contextmanager
def _hosts(config: SimConfig) -> Iterator[dict[str, Host] | None]:
    if not config.netns:
        yield None
        return
    reason = netns_unavailable()
    if reason is not None:
        raise ConfigError(f"--netns: {reason}")
    with bridged_namespaces([n.name for n in config.node_list()]) as hosts:
        yield hosts


class Simulation:
    def __init__(self, config: SimConfig, out: Path, command: str, say: Say = print) -> None:
        self.config, self.out, self.command, self.say = config, out, command, say
        self.began = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.joined: dict[str, float | None] = {}
        self.down: set[str] = set()
        self.failovers: dict[str, tuple[int, float]] = {}  # student -> (count reported, when)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def stage(self, number: int, text: str) -> None:
        self.say(f"[{number}/{STAGES}] {text}")

    def event(self, node: str, kind: str, detail: str, network_step: int | None) -> None:
        at = round(self.elapsed(), 1)
        self.events.append({"at_s": at, "network_step": network_step, "node": node, "kind": kind, "detail": detail})
        self.say(f"      ! {node} {kind}: {detail}")

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> ReportFiles:
        c = self.config
        nodes = c.node_list()
        students = sum(n.role == "student" for n in nodes)
        baseline = "; a no-teacher baseline" if any(n.role == "baseline" for n in nodes) else ""
        self.say(
            f"Agora {__version__} simulation: {len(nodes)} nodes on {'network namespaces' if c.netns else 'loopback'} "
            f"over mTLS; {students} students learn {c.task} with {c.algorithm}{baseline}. Output: {self.out}\n"
        )
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage(1, "the teacher's model and private data (a canary planted in them)")
        teacher, how, teacher_s = prepare_teacher(c, self.out, self.say)
        self.say(f"      teacher model {how} ({teacher_s:.0f}s)")
        with _hosts(c) as hosts:
            network = SimNetwork(c, self.out, hosts)
            try:
                self.stage(2, "a CA and a certificate per node; one data dir and agora.yaml each")
                network.make_certificates()
                network.write_configs(teacher)
                self.start_nodes(network)
                converged = self.wait_for_membership(network)
                faults = f"; faults: {', '.join(map(str, c.faults))}" if c.faults else ""
                self.stage(4, f"learning: {c.steps} steps per student{faults}")
                self.learn(network)
            finally:
                network.stop_all()
            self.stage(5, "every student finished; teachers stopped with SIGTERM")
            self.stage(6, "results: curves, lessons, privacy ledgers, the Secret Sharer audit of every model")
            metrics = self.collect(network, teacher, how, teacher_s, converged)
        files = write_report(metrics, self.out)
        self.say(f"\n{metrics['verdict']}")
        self.say(f"report: {files.markdown}\nplot:   {files.plot}\nmetrics: {files.metrics}")
        return files

    def start_nodes(self, network: SimNetwork) -> None:
        self.stage(3, "starting every node at once; each joins through the others' addresses")
        for name in network.nodes:
            network.launch(name)
        for name, node in network.nodes.items():
            try:
                network.wait_until_serving(name)
            except NodeProcessError as exc:
                raise SimulationError(f"{name} did not start: {exc}") from None
            where = f" in {node.host.netns}" if node.host else ""
            command = "agora learn" if node.learns else "agora run"
            self.say(f"      {name:<8} {node.role:<8} {node.address:<18} {node.metrics_url}{where}  ({command})")

    def wait_for_membership(self, network: SimNetwork) -> float | None:
        pending = set(network.nodes)
        first_start = min(node.started_at for node in network.nodes.values())
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if network.sees_everyone(name) or (network.nodes[name].learns and network.nodes[name].exit_code == 0):
                    self.joined[name] = round(time.monotonic() - network.nodes[name].started_at, 1)
                    pending.discard(name)
            time.sleep(0.2)
        for name in pending:
            self.joined[name] = None
        if pending:
            self.say(
                f"      membership did not converge in {JOIN_TIMEOUT_S:.0f}s: {', '.join(sorted(pending))} missing"
            )
            return None
        took = round(time.monotonic() - first_start, 1)
        self.say(f"      membership converged: every node sees every other alive {took:.1f}s after the first start")
        return took

    def learn(self, network: SimNetwork) -> None:
        c = self.config
        schedule = FaultSchedule(list(c.faults))
        learners = [n for n in network.nodes.values() if n.learns]
        rejoining: dict[str, float] = {}  # restarted node -> when
        resuming: set[str] = set()  # restarted students whose resume is not logged yet
        self.down.clear()  # killed by a fault and not restarted (yet)
        deadline = time.monotonic() + c.max_minutes * 60
        last_print = 0.0
        while True:
            shots = {name: snapshot(node) for name, node in network.nodes.items()}
            own_steps = {n.name: shots[n.name].step for n in learners if n.running}
            network_step = max(own_steps.values(), default=0)
            for fault in schedule.due(network_step, own_steps, bool(own_steps)):
                self.inject(network, fault.action, fault.node, network_step, own_steps.get(fault.node), rejoining)
                if fault.action == "restart" and network.nodes[fault.node].learns:
                    resuming.add(fault.node)
            for node in learners:
                self.note_failovers(node.name, shots[node.name].failovers, network_step)
            for name in list(resuming):
                resumed = _resumed(network.nodes[name].logs[-1])
                if resumed is not None:
                    resuming.discard(name)
                    self.event(name, "resumed", resumed, network_step)
            for name in [n for n in rejoining if network.seen_alive_by_all(n) and network.sees_everyone(n)]:
                took = time.monotonic() - rejoining.pop(name)
                detail = f"alive again in every running node's view {took:.1f}s after its restart"
                self.event(name, "rejoined", detail, network_step)
            if time.monotonic() - last_print >= PROGRESS_EVERY_S:
                last_print = time.monotonic()
                for shot in shots.values():
                    self.say(progress_line(shot, c.steps, self.elapsed()))
            codes = {n.name: n.exit_code for n in learners if n.name not in self.down}
            failed = {name: code for name, code in codes.items() if code not in (None, 0)}
            if failed:
                exits = ", ".join(f"{name} (exit {code})" for name, code in failed.items())
                logs = ", ".join(str(network.nodes[name].logs[-1]) for name in failed)
                raise SimulationError(f"students failed: {exits}; see {logs}")
            if all(code == 0 for code in codes.values()) and not schedule:
                break
            if time.monotonic() > deadline:
                raise SimulationError(f"the students did not finish within max_minutes ({c.max_minutes:g})")
            time.sleep(0.5)
        for name in rejoining:
            self.event(name, "rejoined", "not seen alive by every node before the run ended", None)
        for node in learners:
            if node.name not in self.down:
                summary = _summary_lines(node.logs[-1])
                self.say(f"      {node.name}: " + (summary[0] if summary else "finished"))

    def note_failovers(self, name: str, count: int, network_step: int) -> None:
        """A failover event when a student's count rises, at most one per student per 10 s."""
        seen, at = self.failovers.get(name, (0, -math.inf))
        if count <= seen:
            if count < seen:  # a restart set its counter back to 0
                self.failovers[name] = (count, at)
            return
        if time.monotonic() - at >= PROGRESS_EVERY_S:
            calls = "call" if count - seen == 1 else "calls"
            detail = f"{count - seen} lesson {calls} moved off a failed teacher or backed off (its failover counter)"
            self.event(name, "failover", detail, network_step)
            self.failovers[name] = (count, time.monotonic())

    def inject(
        self,
        network: SimNetwork,
        action: str,
        name: str,
        network_step: int,
        own_step: int | None,
        rejoining: dict[str, float],
    ) -> None:
        node = network.nodes[name]
        own = f" (its own step {own_step})" if own_step is not None else ""
        if action == "kill" or node.running:
            network.kill(name)
            self.down.add(name)
            self.event(name, "killed", f"SIGKILL at network step {network_step}{own}", network_step)
        if action == "restart":
            network.start(name)
            self.down.discard(name)
            rejoining[name] = time.monotonic()
            self.event(name, "restarted", f"started again from {node.data_dir}", network_step)

    def collect(
        self, network: SimNetwork, teacher: TeacherAssets, how: str, teacher_s: float, converged: float | None
    ) -> dict[str, Any]:
        c = self.config
        nodes = [node_result(node, self.joined.get(name), c.steps) for name, node in network.nodes.items()]
        lessons_by_kind, blocked = totals(nodes)
        canary = simulation_canary(c)
        audit = secret_sharer(list(network.nodes.values()), teacher, canary, c.audit_candidates, c.audit_runs)
        base = next((n for n in nodes if n["baseline"]), None)
        gains = {
            n["name"]: {s: n["accuracy_after"][s] - base["accuracy_after"][s] for s in ("seen", "unseen")}
            for n in nodes
            if base is not None and n["role"] == "student" and not n["baseline"]
        }
        return {
            "agora_version": __version__,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(self.elapsed(), 1),
            "command": self.command,
            "machine": machine(),
            "task": c.task,
            "algorithm": c.algorithm,
            "network": {"transport": "netns" if c.netns else "loopback", "mtls": True, "converged_after_s": converged},
            "teacher_model": {"path": str(teacher.model), "how": how, "seconds": round(teacher_s, 1)},
            "nodes": nodes,
            "lessons_by_kind": lessons_by_kind,
            "blocked_by_reason": blocked,
            "events": self.events,
            "secret_sharer": audit,
            "baseline": {"node": base["name"] if base else None, "gain": gains},
            "verdict": verdict(nodes, gains, base),
        }


def _resumed(log: Path) -> str | None:
    """What a restarted student's log says of its resume, once it has said it."""
    for record in read_log_records(log):
        if record.get("event") == "student_resumed":
            rewound = int(str(record["rewound"]))
            lessons = "lesson" if rewound == 1 else "lessons"
            return f"from its checkpoint of step {record['step']}; {rewound} {lessons} of lost updates to replay"
    return None


def _summary_lines(log: Path) -> list[str]:
    """The `agora learn` summary a student printed (the non-JSON lines of its log)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line and not line.startswith("{")]
    return [line for line in lines if " on " in line and " steps in " in line]


def verdict(nodes: list[dict[str, Any]], gains: dict[str, dict[str, float]], base: dict[str, Any] | None) -> str:
    taught = [n for n in nodes if n["role"] == "student" and not n["baseline"]]
    improved = [n["name"] for n in taught if n["accuracy_after"]["seen"] > n["accuracy_before"]["seen"]]
    head = f"{len(improved)} of {len(taught)} taught students improved on seen problems"
    if base is None:
        return head + " (no baseline ran)."
    ahead = [name for name, gain in gains.items() if gain["seen"] > 0]
    return (
        f"{head}; {len(ahead)} of {len(taught)} ended above the no-teacher baseline {base['name']} "
        f"(seen {fmt_pct(base['accuracy_after']['seen'])}): "
        + ", ".join(f"{n['name']} {fmt_pct(n['accuracy_after']['seen'])}" for n in taught)
        + "."
    )


def simulate(config: SimConfig, out: Path, argv: list[str], say: Say = print) -> int:
    """Run a simulation; 0 when every student finished and the report is written, 1 otherwise."""
    command = "agora simulate " + " ".join(shlex.quote(a) for a in argv)
    try:
        Simulation(config, out, command, say).run()
    except (SimulationError, NodeProcessError, RuntimeError) as exc:
        print(f"simulation failed: {exc}", file=sys.stderr)
        return 1
    return 0
