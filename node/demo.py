"""`make demo`: start one real node, show its health, services and metrics, then stop it cleanly.

This is what Agora can do today; `agora simulate` (a whole teaching network) replaces it once
teachers and students exist.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from node import __version__
from node.client import check_health, list_services
from node.process import NodeProcess, NodeProcessError
from node.rpc.agora.v1 import teacher_pb2, teacher_pb2_grpc


def _step(number: int, text: str) -> None:
    print(f"[{number}/5] {text}", flush=True)


def _metrics_excerpt(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith(("agora_build_info", "agora_rpc_requests_total"))]


def _try_a_lesson(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = teacher_pb2_grpc.TeacherStub(channel)
        try:
            stub.Instruct(teacher_pb2.InstructRequest(task="arithmetic"), timeout=5)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "OK"


def run_demo(work_dir: Path) -> int:
    print(f"Agora {__version__} demo: one node on loopback, from start to a clean stop.\n")
    node = NodeProcess(
        ["--name", "demo-node", "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--data-dir", str(work_dir / "data")],
        log_path=work_dir / "node.log",
    )  # fmt: skip
    _step(1, "starting `agora run` ...")
    try:
        started = node.start()
    except NodeProcessError as exc:
        print(f"      failed: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"      {started.name} is listening on {started.address} (log: {node.log_path})")
        health = check_health(started.address)
        _step(2, f"health (grpc.health.v1.Health/Check): {health.status}")
        if not health.serving:
            return 1
        _step(3, "services (server reflection): " + ", ".join(list_services(started.address)))
        print(f"      Teacher/Instruct answers -> {_try_a_lesson(started.address)}")
        _step(4, f"metrics: {started.metrics_url}")
        if started.metrics_url:
            for line in _metrics_excerpt(started.metrics_url):
                print(f"      {line}")
    finally:
        began = time.monotonic()
        code = node.terminate()
    _step(5, f"SIGTERM -> exit code {code} after {time.monotonic() - began:.2f}s")
    for record in node.log_records():
        print(f"      log: {record.get('message')}")
    print("\nNext: teachers, students and `agora simulate` arrive with the following issues; see README.md.")
    return 0 if code == 0 else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agora-demo-") as raw:
        return run_demo(Path(raw))


if __name__ == "__main__":
    sys.exit(main())
