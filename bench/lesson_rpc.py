"""Lesson RPC latency over raw generation for the same work.

A teacher node (the default tiny model shape, private arithmetic data and canaries) serves the
Teacher service over mTLS on a loopback port; a student node in the same process asks it for
`Demonstrate` lessons through the student's own client path (`TeacherPool.lesson`: a signed
envelope, Hello and authentication, a deadline; the reply's signature, lesson id, addressee and
task checked; the lesson recorded in the provenance table). The teacher answers through its
`Release`: the privacy charge (none for Demonstrate: the model is public), the leakage guard on
every continuation, the signature and the store. The raw side is `host.generate_sync` on the
teacher's very ModelHost, with the same prompts and the same `SamplingParams` Demonstrate builds
(TnD's: temperature 1, top-k 20, top-p 0.95, seeded), so every side decodes the same tokens
(checked), in every round. The student applies each lesson after its round, as a learner does. A
third, in-process side (`interactive.demonstrate` + `Release.finish`, no gRPC) splits the
overhead into teacher-side release work and the RPC itself.

Median latency per call at two work sizes (8 prompts x 32 and x 128 new tokens), over rounds
that call the three sides one after another (order alternating) after two warm-up rounds. The
goal is judged on the median of the per-round ratios (lesson / raw within one round), which
shrugs off load that drifts between rounds on a shared machine; the ratio of the medians is
reported beside it, and the overhead split is the median of per-round differences.
Goal: lesson RPC <= 1.05x raw generate.

    python -m bench.lesson_rpc            # full: 30 rounds per size (about 3 minutes on 2 busy cores)
    python -m bench.lesson_rpc --quick    # 8 rounds per size (about 1.5 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import markdown_table, write_results
from bench.goals import Goal, goals_json
from node.app import Node
from node.config import Settings, load_settings
from node.llm import SamplingParams
from node.rpc.agora.v1 import teacher_pb2
from node.security.certs import CertificateAuthority
from node.tasks import get_task
from student.provenance import Provenance
from student.teachers import TeacherPool
from teacher import interactive
from teacher.release import check_parts

GOAL = 1.05
SEED = 7  # of the sampling: every round decodes the same tokens
BATCH = 8
SIZES = (32, 128)  # new tokens per continuation
TASK = "arithmetic"
PRIVATE_EXAMPLES = 256
CANARIES = ["the vault code is 4821", "my sister's name is Maren"]


def node_settings(ca: CertificateAuthority, root: Path, name: str, device: str, **sections: dict[str, Any]) -> Settings:
    """An mTLS node on a loopback port whose certificate `ca` issued (the library's own CA code)."""
    data_dir = root / name
    ca.issue_node(name, data_dir / "certs", dns_names=("localhost",), ips=("127.0.0.1",))
    base: dict[str, dict[str, Any]] = {
        "node": {"name": name, "listen": "127.0.0.1:0", "drain_notice_s": 0.0, "data_dir": str(data_dir)},
        "metrics": {"enabled": False},
        "model": {"device": device},
        "security": {"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_settings(overrides=base)


def teacher_settings(ca: CertificateAuthority, root: Path, device: str) -> Settings:
    private = root / "arithmetic-private.jsonl"
    rows = [{"input": e.question, "output": e.rationale} for e in get_task(TASK).generate("train", PRIVATE_EXAMPLES, 7)]
    private.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    canaries = root / "canaries.txt"
    canaries.write_text("\n".join(CANARIES) + "\n", encoding="utf-8")
    return node_settings(
        ca,
        root,
        "teacher",
        device,
        node={"roles": ["teacher"]},
        teacher={"tasks": [TASK], "private_data": {TASK: str(private)}, "max_new_tokens": max(SIZES)},
        privacy={"canaries_file": str(canaries)},
    )


def prompts() -> list[str]:
    task = get_task(TASK)
    return [task.prompt(e.question) for e in task.generate("seen", BATCH, seed=11)]


def demonstrate_request(texts: list[str], new_tokens: int, seed: int, tnd: Settings) -> teacher_pb2.DemonstrateRequest:
    """What student/tnd.py sends: TnD's sampling, one seed for the whole batch."""
    s = tnd.student
    sampling = teacher_pb2.SamplingParams(
        max_new_tokens=new_tokens, temperature=1.0, top_k=s.tnd_top_k, top_p=s.tnd_top_p, seed=seed
    )
    return teacher_pb2.DemonstrateRequest(task=TASK, prompts=texts, sampling=sampling)


def raw_params(request: teacher_pb2.DemonstrateRequest) -> SamplingParams:
    """The SamplingParams teacher/interactive.py demonstrate builds from the request."""
    s = request.sampling
    return SamplingParams(
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p if 0 < s.top_p < 1 else 1.0,
        seed=s.seed or None,
    )


async def measure(teacher: Node, pool: TeacherPool, student_id: str, new_tokens: int, rounds: int) -> dict[str, Any]:
    core, texts = teacher.teacher, prompts()
    assert core is not None
    host, settings = core.host, teacher.settings

    held: list[str] = []  # lessons received this round, applied (as a learner would) after it

    async def lesson(request: teacher_pb2.DemonstrateRequest) -> list[str]:
        received = await pool.lesson("Demonstrate", request, teacher=teacher.identity.node_id)
        assert received is not None and not received.replayed, "no fresh demonstration"
        held.append(received.lesson_id)
        return [d.continuation for d in received.lesson.demonstrations.demonstrations]

    async def in_process(request: teacher_pb2.DemonstrateRequest) -> list[str]:
        release = core.releaser.release(student_id)
        draft = await interactive.demonstrate(core, request, release)
        body = (await release.finish(draft, core.model_info)).demonstrations
        return [d.continuation for d in body.demonstrations]

    async def raw(request: teacher_pb2.DemonstrateRequest) -> list[str]:
        params = raw_params(request)
        # On a worker thread, as the teacher generates: a blocked event loop would miss the nodes' heartbeats.
        return [g.text for g in await host.run(host.generate_sync, texts, [params] * len(texts))]

    sides: dict[str, Callable[[teacher_pb2.DemonstrateRequest], Awaitable[list[str]]]] = {
        "raw": raw,
        "lesson": lesson,
        "in_process": in_process,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    same, guard_s = True, []
    for step in range(-2, rounds):  # two warm-up rounds; the same request (and so the same work) every round
        request = demonstrate_request(texts, new_tokens, SEED, settings)
        order = list(sides) if step % 2 == 0 else list(reversed(sides))
        outputs: dict[str, list[str]] = {}
        for name in order:
            started = time.perf_counter()
            outputs[name] = await sides[name](request)
            if step >= 0:
                times[name].append(time.perf_counter() - started)
        same = same and outputs["raw"] == outputs["lesson"] == outputs["in_process"]
        pool.provenance.record_update(new_tokens * 1000 + step + 3, "bench", None, 0, set(held))
        pool.released(set(held))
        held.clear()
        guarded = [p + t for p, t in zip(texts, outputs["raw"], strict=True)]
        started = time.perf_counter()
        check_parts(core.releaser.guard, guarded, "\n".join(texts))
        guard_s.append(time.perf_counter() - started)
    params = raw_params(demonstrate_request(texts, new_tokens, SEED, settings))
    tokens = sum(len(g.token_ids) for g in host.generate_sync(texts, [params] * len(texts)))
    raw_s, lesson_s, local_s = (statistics.median(times[name]) for name in ("raw", "lesson", "in_process"))

    def paired(f: Callable[[float, float, float], float]) -> float:
        return statistics.median(
            f(*row) for row in zip(times["raw"], times["in_process"], times["lesson"], strict=True)
        )

    ratio = paired(lambda raw, local, rpc: rpc / raw)
    return {
        "prompts": len(texts),
        "max_new_tokens": new_tokens,
        "tokens_generated": tokens,
        "rounds": rounds,
        "raw_s": raw_s,
        "lesson_s": lesson_s,
        "in_process_s": local_s,
        "ratio_of_medians": lesson_s / raw_s,
        "paired_ratio": ratio,
        "met": ratio <= GOAL,
        "release_overhead_s": paired(lambda raw, local, rpc: local - raw),
        "rpc_overhead_s": paired(lambda raw, local, rpc: rpc - local),
        "guard_s": statistics.median(guard_s),
        "batch_window_s": settings.model.batch_window_ms / 1000,
        "same_tokens": same,
        "all_s": times,
    }


async def run(device: str, rounds: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    root = Path(tempfile.mkdtemp(prefix="agora-bench-lesson-rpc-"))
    ca = CertificateAuthority()
    teacher = Node(teacher_settings(ca, root, device))
    student = Node(node_settings(ca, root, "student", device, node={"roles": ["student"]}))
    core = teacher.teacher
    assert core is not None
    model: dict[str, Any] = {
        "parameters": core.host.parameter_count,
        "spec": core.host.metadata.extra.get("spec"),
        "device": str(core.host.device),
        "dtype": str(core.host.placement.dtype).removeprefix("torch."),
    }
    print(f"[lesson_rpc] {model['parameters'] / 1e6:.2f}M-parameter teacher on {model['device']}", file=sys.stderr)
    await teacher.start()
    await student.start()
    try:
        assert teacher.addresses is not None
        hello = await student.client.hello(teacher.addresses.grpc, "teacher")
        student.view.learn(hello.card, direct=True)
        provenance = Provenance(student.store)
        pool = TeacherPool(
            student.settings, student.identity.node_id, student.client, student.view, provenance, student.metrics
        )
        results = []
        for new_tokens in SIZES:
            figures = await measure(teacher, pool, student.identity.node_id, new_tokens, rounds)
            print(
                f"[lesson_rpc] {BATCH} x {new_tokens}: lesson {figures['lesson_s'] * 1000:.1f} ms, "
                f"raw {figures['raw_s'] * 1000:.1f} ms, per-round ratio {figures['paired_ratio']:.3f}",
                file=sys.stderr,
            )
            results.append(figures)
    finally:
        await student.stop()
        await teacher.stop()
        shutil.rmtree(root, ignore_errors=True)
    return model, results


def median_ci95(values: list[float]) -> tuple[float, float] | None:
    """Distribution-free 95% interval for a median: the order statistics x_(k), x_(n+1-k) with the
    largest k whose binomial tail P(B <= k-1), B ~ Bin(n, 1/2), is at most 2.5% (None below 6 values)."""
    n, ordered = len(values), sorted(values)
    tail, k = 0.0, 0
    while tail + math.comb(n, k) / 2**n <= 0.025:
        tail += math.comb(n, k) / 2**n
        k += 1
    return None if k == 0 else (ordered[k - 1], ordered[n - k])


def goals(result: dict[str, Any]) -> list[Goal]:
    """Per work size: the median of per-round lesson/raw ratios, the figure the goal is judged on;
    its interval is median_ci95 over the rounds' own ratios (rounds are not seeds, so it speaks
    for this machine's load at the time, not for other machines)."""
    limit = result["config"]["goal"]
    found = []
    for size in result["sizes"]:
        ratio = size["paired_ratio"]
        times = size.get("all_s") or {}
        rounds = [rpc / raw for raw, rpc in zip(times.get("raw", []), times.get("lesson", []), strict=True)]
        name = f"lesson_rpc_over_raw_{size['prompts']}x{size['max_new_tokens']}"
        target = f"<= {limit:g}x raw generate (median per-round ratio)"
        found.append(Goal(name, ratio, target, ratio <= limit, median_ci95(rounds)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lesson_rpc", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 rounds per size instead of 30")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], mps (default auto)")
    parser.add_argument("--rounds", type=int, help="measured rounds per work size (default 30, quick 8)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (8 if args.quick else 30)
    started = time.perf_counter()
    model, results = asyncio.run(run(args.device, rounds))
    ms = 1000.0
    rows = [
        [
            f"{r['prompts']} prompts x {r['max_new_tokens']} new tokens",
            f"{r['lesson_s'] * ms:.1f} ms",
            f"{r['raw_s'] * ms:.1f} ms",
            f"{r['paired_ratio']:.3f}x (of medians {r['ratio_of_medians']:.3f}x)",
            f"<= {GOAL}x: {'met' if r['met'] else 'missed'}",
            f"release {r['release_overhead_s'] * ms:+.1f} ms (batch window {r['batch_window_s'] * ms:g}, "
            f"guard {r['guard_s'] * ms:.1f}), "
            f"RPC {r['rpc_overhead_s'] * ms:+.1f} ms",
            f"{r['tokens_generated'] / r['prompts']:.1f}/row, same: {r['same_tokens']}",
        ]
        for r in results
    ]
    spec = model["spec"] or {}
    shape = f"{spec.get('family')}, {spec.get('layers')} layers, dim {spec.get('dim')}, {spec.get('heads')} heads"
    header = [
        "work",
        "Demonstrate lesson RPC",
        "raw generate_sync",
        "ratio (per round)",
        "goal",
        "overhead split",
        "tokens",
    ]
    table = markdown_table(header, rows)
    table += (
        f"\n\nMedians of {rounds} interleaved rounds (one call per side each) after 2 warm-up rounds; teacher model "
        f"{model['parameters'] / 1e6:.2f}M parameters ({shape}) on {model['device']} ({model['dtype']}); "
        "mTLS over loopback, TnD sampling (temperature 1, top-k 20, top-p 0.95, seeded). Overhead split "
        "(medians of per-round differences): release = in-process `demonstrate` + `Release.finish` minus raw "
        "(batcher window, worker-thread hop, leakage guard, signature, store); RPC = lesson RPC minus in-process "
        "(gRPC over mTLS, envelope seal and checks, the student's lesson checks and provenance record)."
    )
    name = "lesson_rpc-quick" if args.quick else "lesson_rpc"
    config = {"quick": args.quick, "rounds": rounds, "warmup": 2, "batch": BATCH, "sizes": list(SIZES), "goal": GOAL}
    data = {"config": config, "model": model, "sizes": results, "met": all(r["met"] for r in results)}
    data["wall_s"] = time.perf_counter() - started
    data["goals"] = goals_json(goals(data))
    path = write_results(name, data, table)
    print(table)
    print(f"[lesson_rpc] results in {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
