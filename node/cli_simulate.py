"""`agora simulate`: a whole teaching network of real node processes on one machine.

agora simulate                                   the demo: a teacher, 2 students and a no-teacher baseline
agora simulate --nodes 4 --algorithm tnd --out sim-run
agora simulate --config sim.yaml --kill ada@40 --restart ada@60
agora simulate --algorithm social --task arithmetic --student social_use=in_context
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli_errors import UsageError


def add_command(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="run a whole teaching network on this machine and write a report",
        description="Train (or load) a teacher's model with a canary planted in its private data, make a CA "
        "and a certificate per node, start every node as a real `agora run` / `agora learn` process over "
        "mTLS, show each student's progress live, inject the faults asked for, and write report.md, "
        "curves.png and metrics.json to --out. A no-teacher baseline student runs beside the taught ones, "
        "so the report shows what the teacher added. Exit 0 when every student finished, 1 when the run "
        "failed, 2 for bad input. Fields of sim.yaml: see `agora simulate --help-config`.",
        epilog="example: agora simulate --nodes 3 --kill ada@45 --restart ada@60 --out sim-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--config", type=Path, metavar="SIM.YAML", help="simulation settings (see --help-config)")
    simulate.add_argument("--nodes", type=int, metavar="N", help="1 teacher + N-1 students (default 3)")
    simulate.add_argument("--task", help="task to teach and learn (default word_learning)")
    simulate.add_argument("--algorithm", help="tripost, yoda, social, tnd or sft (default tnd)")
    simulate.add_argument("--steps", type=int, metavar="N", help="learning steps per student (default 400)")
    simulate.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a student.* setting for every student and the baseline, over student_settings (repeatable; the value "
        "is read as YAML), e.g. social_use=in_context",
    )
    simulate.add_argument(
        "--teacher-model", type=Path, metavar="DIR", help="load the teacher's model instead of training one"
    )
    simulate.add_argument("--no-baseline", action="store_true", help="leave out the no-teacher baseline student")
    simulate.add_argument(
        "--kill",
        action="append",
        default=[],
        metavar="NODE@STEP",
        help="SIGKILL NODE at STEP: a student's own step, else the network's (the furthest running student's)",
    )
    simulate.add_argument(
        "--restart",
        action="append",
        default=[],
        metavar="NODE@STEP",
        help="start NODE again from its data dir at the network's STEP (at once if no student is running)",
    )
    simulate.add_argument("--netns", action="store_true", help="each node in its own network namespace (root only)")
    simulate.add_argument(
        "--out", type=Path, default=Path("agora-sim"), metavar="DIR", help="where the run and report go (agora-sim)"
    )
    simulate.add_argument("--help-config", action="store_true", help="print every sim.yaml field with its default")


def _config_help() -> str:
    from node.sim.config import SimConfig

    lines = ["sim.yaml fields (all optional):"]
    for name, field in SimConfig.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        lines.append(f"  {name:<18} default {default!r}\n      {field.description}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from node.sim.config import Fault, load_sim_config, parse_student_setting
    from node.sim.run import simulate

    if args.help_config:
        print(_config_help())
        return 0
    faults = [Fault.parse("kill", text) for text in args.kill] + [Fault.parse("restart", text) for text in args.restart]
    overrides: dict[str, Any] = {
        "nodes": args.nodes,
        "task": args.task,
        "algorithm": args.algorithm,
        "steps": args.steps,
        "teacher_model": args.teacher_model,
        "baseline": False if args.no_baseline else None,
        "netns": True if args.netns else None,
        "faults": faults or None,
    }
    student = dict(parse_student_setting(text) for text in args.student)
    config = load_sim_config(args.config, overrides, student)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    if (args.out / "nodes").exists():
        raise UsageError(
            f"--out {args.out} holds an earlier run's nodes; remove {args.out / 'nodes'} (the trained teacher in "
            f"{args.out / 'models'} is reused) or choose another --out"
        )
    return simulate(config, args.out.resolve(), args.argv[1:], say=lambda line: print(line, flush=True))
