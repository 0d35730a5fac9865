"""Run `agora run` (or `agora learn`) as a child process and learn where it listens from its JSON
startup log line.

Used by `agora simulate` (and so `make demo`) and by integration tests: each node is a real OS
process that can be signalled, killed and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class NodeProcessError(RuntimeError):
    """The node process did not start or stop as expected; the message quotes its log."""


@dataclass(frozen=True)
class StartedNode:
    """What a node said in its startup line."""

    name: str
    address: str
    metrics_url: str | None


def read_log_records(path: Path) -> list[dict[str, object]]:
    """The JSON records of a log file written with --log-format json (other lines are skipped)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class NodeProcess:
    """One `agora run` (or `agora learn`: ``command``) child process, logging JSON lines to ``log_path``."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        command: str = "run",
    ) -> None:
        self.args = args
        self.command = command
        self.log_path = log_path
        self.env = env
        # A command the node runs under, e.g. ["ip", "netns", "exec", NS] for a network namespace
        # (it must exec the node in place, so that the pid and signals are the node's own).
        self.prefix = prefix or []
        self.process: subprocess.Popen[bytes] | None = None
        self.started: StartedNode | None = None

    def start(self, timeout_s: float = 60.0) -> StartedNode:
        """Spawn the node and wait for its startup line; raise with the log tail on failure."""
        self.launch()
        return self.wait_until_serving(timeout_s)

    def launch(self) -> None:
        """Spawn the node without waiting (start several at once, then wait for each)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [*self.prefix, sys.executable, "-m", "node.cli", self.command, "--log-format", "json", *self.args]
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)

    def wait_until_serving(self, timeout_s: float = 60.0) -> StartedNode:
        """Wait for the launched node's startup line; raise with the log tail on failure."""
        if self.process is None:
            raise NodeProcessError("node was never launched")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            started = self._startup_record()
            if started is not None:
                self.started = started
                return started
            if self.process.poll() is not None:
                raise NodeProcessError(
                    f"node exited with code {self.process.returncode} before serving:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.kill()
        raise NodeProcessError(f"node did not report serving within {timeout_s:.0f}s:\n{self.log_tail()}")

    def _startup_record(self) -> StartedNode | None:
        for record in self.log_records():
            if record.get("event") == "node_started":
                metrics_url = record.get("metrics_url")
                return StartedNode(
                    str(record["node"]), str(record["address"]), str(metrics_url) if metrics_url else None
                )
        return None

    def node_id(self) -> str:
        """The node_id its startup line reported."""
        return next(str(r["node_id"]) for r in self.log_records() if r.get("event") == "node_started")

    def log_records(self) -> list[dict[str, object]]:
        """Every JSON log line written so far (other lines are skipped)."""
        return read_log_records(self.log_path)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit code."""
        if self.process is None:
            raise NodeProcessError("node was never started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeProcessError(
                f"node did not exit within {timeout_s:.0f}s of SIGTERM:\n{self.log_tail()}"
            ) from None

    def poll(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL (fault injection, or cleanup after a failure)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
