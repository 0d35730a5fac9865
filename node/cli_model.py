"""`agora model init | train | eval` and `agora task list | sample`: tiny models and their tasks.

agora model init --task arithmetic --family llama --layers 4 --dim 192 --out models/teacher
agora model train --task arithmetic --steps 2000 --out models/teacher
agora model eval --task arithmetic --model models/teacher
agora task sample arithmetic -n 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from node.cli_errors import UsageError

_TINY_DEFAULTS = {"family": "llama", "layers": 4, "dim": 128, "heads": 4, "max_positions": 2048}


def _placement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default auto)",
    )


def _tiny_arguments(parser: argparse.ArgumentParser, note: str) -> None:
    group = parser.add_argument_group(f"tiny model shape{note}")
    group.add_argument("--family", choices=["llama", "gpt2"], default="llama", help="architecture (default llama)")
    group.add_argument("--layers", type=int, default=_TINY_DEFAULTS["layers"], help="transformer layers (default 4)")
    group.add_argument("--dim", type=int, default=_TINY_DEFAULTS["dim"], help="hidden size (default 128)")
    group.add_argument("--heads", type=int, default=_TINY_DEFAULTS["heads"], help="attention heads (default 4)")
    group.add_argument(
        "--max-positions",
        type=int,
        default=_TINY_DEFAULTS["max_positions"],
        help="context length in tokens (default 1024)",
    )


def add_commands(commands: Any) -> None:
    """Register `model` and `task` on the top-level subparsers."""
    model = commands.add_parser(
        "model", help="build, train and evaluate tiny models", description="Build, train and evaluate models."
    )
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True, help="one of:")

    init = sub.add_parser(
        "init",
        help="build a tokenizer from a task's corpus and a random-init tiny model",
        description="Train a character- or word-level tokenizer on the task's corpus and build a randomly "
        "initialised Llama- or GPT-2-family model for it; write both to --out.",
        epilog="example: agora model init --task arithmetic --family llama --layers 4 --dim 192 --out models/t",
    )
    init.add_argument("--task", required=True, help="task whose corpus the tokenizer learns (see `agora task list`)")
    init.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint directory to write")
    init.add_argument("--force", action="store_true", help="replace a model already in --out")
    init.add_argument("--seed", type=int, default=0, help="seed for the corpus and the weights (default 0)")
    _tiny_arguments(init, "")

    train = sub.add_parser(
        "train",
        help="fine-tune a model on a task's gold rationales (SFT)",
        description="Supervised fine-tuning on gold rationales with AdamW and a cosine schedule, a progress "
        "bar, and held-out accuracy every --eval-every steps. Starts from --model, else from the model "
        "in --out, else from a new tiny model; writes checkpoints to --out (atomically).",
        epilog="example: agora model train --task arithmetic --steps 2000 --out models/t --time-limit 10",
    )
    train.add_argument("--task", required=True, help="task to learn")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint directory to write")
    train.add_argument("--model", metavar="DIR|HUB_ID", help="start from this model (default: the one in --out)")
    train.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    train.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    train.add_argument("--lr", type=float, default=5e-3, help="peak learning rate (default 5e-3)")
    train.add_argument("--eval-every", type=int, default=200, help="steps between held-out checks (default 200)")
    train.add_argument("--eval-n", type=int, default=32, help="problems per split in each check (default 32)")
    train.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop after this many minutes")
    train.add_argument("--seed", type=int, default=0, help="seed for data order (default 0)")
    _placement_arguments(train)
    _tiny_arguments(train, " (only when starting a new model)")

    evaluate = sub.add_parser(
        "eval",
        help="print a model's accuracy on a task, by split",
        description="Greedy-decode n problems of each split and grade the final answers.",
        epilog="example: agora model eval --task arithmetic --model models/t --n 200",
    )
    evaluate.add_argument("--task", required=True, help="task to evaluate on")
    evaluate.add_argument("--model", required=True, metavar="DIR|HUB_ID", help="model to evaluate")
    evaluate.add_argument("--n", type=int, default=100, help="problems per split (default 100)")
    evaluate.add_argument("--splits", default="train,seen,unseen", help="comma-separated splits (default all three)")
    evaluate.add_argument("--seed", type=int, default=0, help="which problems (default 0)")
    evaluate.add_argument("--format", choices=["text", "json"], default="text", help="output format (default text)")
    _placement_arguments(evaluate)

    task = commands.add_parser("task", help="list tasks and show examples", description="The task library.")
    task_sub = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True, help="one of:")
    task_sub.add_parser("list", help="list the built-in tasks", description="List the built-in tasks.")
    sample = task_sub.add_parser(
        "sample",
        help="print examples of a task with their gold rationales",
        description="Print n generated examples of a split: question, gold rationale and answer.",
        epilog="example: agora task sample arithmetic -n 5 --split unseen",
    )
    sample.add_argument("task", help="task name, or jsonl:PATH for your own data")
    sample.add_argument("-n", type=int, default=5, help="how many examples (default 5)")
    sample.add_argument("--split", choices=["train", "seen", "unseen"], default="train", help="split (default train)")
    sample.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    sample.add_argument("--format", choices=["text", "json"], default="text", help="output format (default text)")


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")


def _task(name: str) -> Any:
    from node.tasks import TaskError, get_task

    try:
        return get_task(name)
    except TaskError as exc:
        raise UsageError(str(exc)) from None


def _spec(args: argparse.Namespace) -> Any:
    from node.llm import ModelLoadError, TinySpec

    try:
        return TinySpec(args.family, args.layers, args.dim, args.heads, args.max_positions)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None


def _load(source: str, args: argparse.Namespace) -> Any:
    from node.llm import ModelHost, ModelLoadError, PlacementError, resolve_placement

    try:
        return ModelHost.load(source, resolve_placement(args.device, args.dtype))
    except (ModelLoadError, PlacementError) as exc:
        raise UsageError(str(exc)) from None


def _check_vocabulary(host: Any, task: Any, where: str) -> None:
    built_for = host.metadata.task
    if host.metadata.tokenizer_level and built_for and built_for != task.name:
        raise UsageError(
            f"the model in {where} was built for task {built_for!r}; its tokenizer knows only that task's "
            f"symbols. Use --task {built_for} or `agora model init --task {task.name}` a new one"
        )


def _init(args: argparse.Namespace) -> int:
    from node.llm import ModelHost

    task, spec = _task(args.task), _spec(args)
    if (args.out / "config.json").exists() and not args.force:
        raise UsageError(f"{args.out} already holds a model; pass --force to replace it")
    host = ModelHost.build(task, spec, seed=args.seed)
    host.save(args.out)
    print(
        f"built {spec.family} model: {spec.layers} layers, dim {spec.dim}, {spec.heads} heads, "
        f"{host.parameter_count / 1e6:.2f}M parameters, {len(host.tokenizer)}-token {task.tokenizer_level}-level "
        f"vocabulary for task {task.name} -> {args.out}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from node.llm import ModelHost, PlacementError, resolve_placement
    from node.llm.sft import SFTConfig, train_sft

    for name in ("steps", "batch_size", "lr", "eval_n", "time_limit"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    task = _task(args.task)
    if args.model:
        host, where = _load(args.model, args), args.model
    elif (args.out / "config.json").exists():
        host, where = _load(str(args.out), args), str(args.out)
    else:
        try:
            placement = resolve_placement(args.device, args.dtype)
        except PlacementError as exc:
            raise UsageError(str(exc)) from None
        host, where = ModelHost.build(task, _spec(args), placement, seed=args.seed), "a new tiny model"
    _check_vocabulary(host, task, where)
    config = SFTConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=max(0, args.eval_every),
        eval_n=args.eval_n,
        time_limit_s=args.time_limit * 60 if args.time_limit else None,
        seed=args.seed,
    )
    print(
        f"training {where} ({host.parameter_count / 1e6:.2f}M parameters, {host.placement.describe()}) "
        f"on {task.name} for {config.steps} steps of {config.batch_size}"
        + (f" or {args.time_limit:g} minutes, whichever ends first" if args.time_limit else ""),
        file=sys.stderr,
    )
    # A live bar on a terminal; in logs (no TTY) a plain line every 5% of the steps or 30 s instead.
    live = sys.stderr.isatty()
    bar = tqdm(total=config.steps, unit="step", file=sys.stderr, dynamic_ncols=True, disable=not live)
    every, last_line = max(1, config.steps // 20), [time.monotonic()]

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if not live and (step % every == 0 or time.monotonic() - last_line[0] > 30):
            last_line[0] = time.monotonic()
            print(f"step {step}/{config.steps}: loss {loss:.3f}", file=sys.stderr, flush=True)

    def on_eval(row: dict[str, float]) -> None:
        accuracies = ", ".join(f"{k} {row[k]:.1%}" for k in ("seen", "unseen"))
        bar.write(
            f"step {int(row['step'])}: train loss {row['train_loss']:.3f}, held-out loss {row['seen_loss']:.3f}, "
            f"accuracy {accuracies}",
            file=sys.stderr,
        )
        host.save(args.out, eval=row)

    try:
        report = train_sft(host, task, config, on_step, on_eval)
    except KeyboardInterrupt:  # keep what was learned: Ctrl-C saves before it exits
        bar.close()
        host.save(args.out)
        print(f"interrupted after {host.metadata.train_steps} steps in all; saved to {args.out}", file=sys.stderr)
        return 130
    bar.close()
    final = report.final_accuracy
    host.save(args.out, eval=report.history[-1], train={"steps": report.steps, "seconds": round(report.seconds, 1)})
    print(
        f"trained {report.steps} steps in {report.seconds / 60:.1f} min; accuracy seen {final['seen']:.1%}, "
        f"unseen {final['unseen']:.1%} -> {args.out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from node.llm.sft import evaluate

    _positive("--n", args.n)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in ("train", "seen", "unseen")]
    if unknown or not splits:
        raise UsageError(f"--splits takes train, seen and/or unseen, got {args.splits!r}")
    task = _task(args.task)
    host = _load(args.model, args)
    _check_vocabulary(host, task, args.model)
    results = evaluate(host, task, splits, args.n, args.seed)
    if args.format == "json":
        print(json.dumps({"task": task.name, "model": args.model, "n": args.n, "accuracy": results}, indent=2))
    else:
        print(f"{task.name}, {args.n} problems per split, model {args.model}")
        for split, value in results.items():
            print(f"  {split:<7} {value:6.1%}")
    return 0


def _task_command(args: argparse.Namespace) -> int:
    if args.task_command == "list":
        from node.tasks import BUILTIN_TASKS

        for name, task_class in BUILTIN_TASKS.items():
            print(f"{name:<18} {task_class.summary}")
        print(f'{"jsonl:PATH":<18} your own data: one {{"input": ..., "output": ...}} object per line')
        return 0
    _positive("-n", args.n)
    task = _task(args.task)
    examples = task.generate(args.split, args.n, args.seed)
    if args.format == "json":
        for e in examples:
            record = {"question": e.question, "rationale": e.rationale, "answer": e.answer, "split": e.split}
            print(json.dumps(record | {"meta": dict(e.meta)}))
        return 0
    for index, example in enumerate(examples, 1):
        print(f"--- {task.name} {example.split} #{index}")
        print(task.prompt(example.question) + example.rationale)
        print(f"[answer: {example.answer}]")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command == "task":
        return _task_command(args)
    handlers = {"init": _init, "train": _train, "eval": _eval}
    return handlers[args.model_command](args)
