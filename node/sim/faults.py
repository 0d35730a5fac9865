"""Fault injection by the clock of the network's learning: `--kill NODE@STEP`, `--restart NODE@STEP`.

A student is killed at its own learning step (read from its store); every other fault fires at
the network's step, the highest learning step among the students that are running. A kill is
SIGKILL, no goodbye: the node's peers must notice by missed heartbeats. A restart starts the node
again from its data dir (a student resumes from its newest checkpoint); restarting a node that is
still up kills it first, a crash and reboot. So that a run cannot wait forever on a clock that
stopped (every student down), due restarts fire at once when no student is running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.sim.config import Fault


@dataclass
class FaultSchedule:
    pending: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Kills before restarts at the same step, each in step order: "kill a@10 restart a@10" is a crash-reboot.
        self.pending.sort(key=lambda f: (f.step, f.action != "kill"))

    def due(self, network_step: int, own_steps: dict[str, int], students_running: bool) -> list[Fault]:
        """The faults to inject now, removed from the schedule; `own_steps` holds each running student's step."""

        def clock(fault: Fault) -> int:
            return own_steps[fault.node] if fault.action == "kill" and fault.node in own_steps else network_step

        def ready(fault: Fault) -> bool:
            if fault.action == "kill":
                return fault.step <= clock(fault)
            # a node's restart waits for its kills: "kill a@12 restart a@10" still kills first
            return self._kills_done(fault) and (fault.step <= network_step or not students_running)

        now = [f for f in self.pending if ready(f)]
        self.pending = [f for f in self.pending if f not in now]
        return now

    def _kills_done(self, restart: Fault) -> bool:
        return not any(f.action == "kill" and f.node == restart.node for f in self.pending)

    def __bool__(self) -> bool:
        return bool(self.pending)
