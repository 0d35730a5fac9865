"""`agora tnd train-teacher | train-reward | report`: what a TnD experiment needs besides the nodes.

agora tnd train-teacher --out runs/tnd-teacher --steps 2000
agora tnd train-reward --teacher runs/tnd-teacher --out runs/tnd-reward
agora tnd report runs/tnd-student --out runs/tnd-student/report

The teacher is a tiny Llama trained from scratch on the child-directed word-learning corpus,
keeping log-spaced checkpoints; the reward is the age predictor R_phi built from the texts those
checkpoints write. A teacher node serves them with `model.source: runs/tnd-teacher/final` and
`teacher.age_predictor: runs/tnd-reward` (Demonstrate and Score SCORE_KIND_AGE).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from node.cli_errors import EXIT_OK, UsageError


def add_commands(commands: Any) -> None:
    """Register `tnd` and its subcommands on the top-level subparsers."""
    tnd = commands.add_parser(
        "tnd",
        help="TnD: train the teacher and its age predictor, report a student run",
        description="Trials and Demonstrations (Ma, Wang, Chai 2024): the teacher, the age-predictor reward "
        "and the word-learning report of a student run.",
    )
    sub = tnd.add_subparsers(dest="tnd_command", metavar="SUBCOMMAND", required=True, help="one of:")

    teacher = sub.add_parser(
        "train-teacher",
        help="train a tiny causal LM from scratch on the word-learning corpus, keeping log-spaced checkpoints",
        description="Build a new tiny Llama with a word-level tokenizer and train it by causal language modelling "
        "on --corpus child-directed sentences (AdamW, warm-up then cosine decay). Checkpoints are kept at steps "
        "2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, ... and the last step, in OUT/checkpoints/step-NNNNNN/; the "
        "final model goes to OUT/final/ (a model.source for the teacher node) and a summary to OUT/teacher.json.",
        epilog="example: agora tnd train-teacher --out runs/tnd-teacher --steps 2000 --layers 4 --dim 128 --heads 4",
    )
    teacher.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write the run to")
    teacher.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    teacher.add_argument("--batch-size", type=int, default=32, help="sentences per step (default 32)")
    teacher.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    teacher.add_argument("--corpus", type=int, default=20_000, metavar="N", help="training sentences (default 20000)")
    teacher.add_argument(
        "--sentences-per-text",
        type=int,
        default=1,
        metavar="N",
        help="sentences per training text, so that the teacher goes on past one utterance (default 1)",
    )
    teacher.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    teacher.add_argument("--dim", type=int, default=128, help="hidden size (default 128)")
    teacher.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    teacher.add_argument("--seed", type=int, default=0, help="seed for corpus, data order and weights (default 0)")
    teacher.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    teacher.add_argument(
        "--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"], help="(default float32)"
    )
    teacher.add_argument(
        "--private",
        type=Path,
        metavar="FILE",
        help="the teacher's private sentences, one per line, added to the corpus (e.g. a canary to audit later)",
    )
    teacher.add_argument(
        "--private-repeats", type=int, default=20, metavar="N", help="times each private sentence is added (default 20)"
    )
    teacher.add_argument("--force", action="store_true", help="replace a teacher run already in --out")

    reward = sub.add_parser(
        "train-reward",
        help="build the age predictor R_phi from a teacher's checkpoints",
        description="Every checkpoint in TEACHER/checkpoints continues --contexts short contexts (the first words "
        "of held-out corpus sentences) --samples times, sampled as TnD's trials are (temperature 1, top-k 20, "
        "top-p 0.95); each text is labelled log2(step). A tiny Llama regression model over the teacher's tokenizer "
        "learns the label by MSE; contexts are split into train and held-out sets, and the held-out Pearson r "
        "between predictions and labels is printed.",
        epilog="example: agora tnd train-reward --teacher runs/tnd-teacher --out runs/tnd-reward --contexts 200",
    )
    reward.add_argument("--teacher", type=Path, required=True, metavar="DIR", help="a train-teacher output directory")
    reward.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write R_phi to")
    reward.add_argument("--contexts", type=int, default=200, metavar="N", help="distinct contexts (default 200)")
    reward.add_argument("--samples", type=int, default=4, metavar="N", help="texts per context and step (default 4)")
    reward.add_argument(
        "--max-new-tokens", type=int, default=24, metavar="N", help="tokens per continuation (default 24)"
    )
    reward.add_argument("--steps", type=int, default=600, help="regression optimizer steps (default 600)")
    reward.add_argument("--batch-size", type=int, default=32, help="texts per step (default 32)")
    reward.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    reward.add_argument(
        "--held-out", type=float, default=0.2, metavar="SHARE", help="share of contexts held out (default 0.2)"
    )
    reward.add_argument("--layers", type=int, default=2, help="regressor layers (default 2)")
    reward.add_argument("--dim", type=int, default=64, help="regressor hidden size (default 64)")
    reward.add_argument("--heads", type=int, default=4, help="regressor attention heads (default 4)")
    reward.add_argument("--seed", type=int, default=0, help="seed for contexts, sampling and weights (default 0)")
    reward.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    reward.add_argument("--force", action="store_true", help="replace an age predictor already in --out")

    report = sub.add_parser(
        "report",
        help="word-learning curves, nAoA and effective vocabulary of a TnD student run",
        description="Read a TnD student run directory and write its report (tables and plots).",
        epilog="example: agora tnd report runs/tnd-student --out runs/tnd-student/report",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a TnD student run directory")
    report.add_argument("--out", type=Path, metavar="DIR", help="where to write the report (default: in RUN_DIR)")


def _positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")


class _Progress:
    """A live tqdm bar per phase on a terminal; in logs (no TTY) a plain line every 5% or 30 s instead."""

    def __init__(self) -> None:
        self.live, self.phase, self.last = sys.stderr.isatty(), "", time.monotonic()
        self.bar: Any = None

    def __call__(self, phase: str, done: int, total: int, note: str = "") -> None:
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=total, desc=phase, file=sys.stderr, dynamic_ncols=True, disable=not self.live)
        self.bar.update(done - self.bar.n)
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        if not self.live and (done % max(1, total // 20) == 0 or time.monotonic() - self.last > 30):
            self.last = time.monotonic()
            print(f"{phase} {done}/{total}" + (f": {note}" if note else ""), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _private_sentences(path: Path | None) -> tuple[str, ...]:
    """The --private file's sentences; words outside the task's vocabulary would train as <unk>."""
    if path is None:
        return ()
    from node.tasks.word_learning import WordLearningTask

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--private {path}: {exc.strerror or exc}") from None
    sentences = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    known = set(WordLearningTask().vocabulary)
    unknown = sorted({word for s in sentences for word in s.split() if word not in known})
    if unknown:
        raise UsageError(f"--private {path}: words outside the word_learning vocabulary: {', '.join(unknown[:10])}")
    return sentences


def _train_teacher(args: argparse.Namespace) -> int:
    from node.llm import ModelLoadError, TinySpec, resolve_placement
    from teacher.tnd_teacher import CHECKPOINTS_DIR, FINAL_DIR, TEACHER_FILE, TeacherTrainConfig, train_teacher

    _positive(steps=args.steps, batch_size=args.batch_size, lr=args.lr, corpus=args.corpus)
    _positive(sentences_per_text=args.sentences_per_text)
    private = _private_sentences(args.private)
    try:
        spec = TinySpec("llama", args.layers, args.dim, args.heads)
        placement = resolve_placement(args.device, args.dtype)
        config = TeacherTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            corpus=args.corpus,
            sentences_per_text=args.sentences_per_text,
            spec=spec,
            device=args.device,
            dtype=args.dtype,
            seed=args.seed,
            private=private,
            private_repeats=args.private_repeats,
        )
    except (ModelLoadError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if not args.force and any((args.out / name).exists() for name in (CHECKPOINTS_DIR, FINAL_DIR, TEACHER_FILE)):
        raise UsageError(f"{args.out} already holds a teacher run; pass --force to replace it")
    print(
        f"training a new {spec.layers}-layer, dim-{spec.dim} teacher ({placement.describe()}) on {config.corpus} "
        f"word-learning sentences for {config.steps} steps of {config.batch_size}",
        file=sys.stderr,
    )
    progress = _Progress()
    report = train_teacher(
        args.out, config, lambda step, loss: progress("train", step, config.steps, f"loss {loss:.3f}"), args.force
    )
    progress.close()
    steps = ", ".join(str(c.step) for c in report.checkpoints)
    last = report.checkpoints[-1]
    print(
        f"trained {report.steps} steps in {report.seconds / 60:.1f} min ({report.parameters / 1e6:.2f}M parameters); "
        f"loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}, held-out loss {last.held_out_loss:.3f}"
    )
    print(f"{len(report.checkpoints)} checkpoints (steps {steps}) -> {report.out / CHECKPOINTS_DIR}")
    print(f"final model -> {report.final} (use it as model.source of the teacher node)")
    return EXIT_OK


def _train_reward(args: argparse.Namespace) -> int:
    from node.llm import resolve_placement
    from teacher.age_predictor import INFO_FILE, AgePredictorConfig, train_age_predictor
    from teacher.tnd_teacher import teacher_checkpoints

    _positive(
        contexts=args.contexts,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        layers=args.layers,
        dim=args.dim,
        heads=args.heads,
    )
    try:
        checkpoints = teacher_checkpoints(args.teacher)
        config = AgePredictorConfig(
            contexts=args.contexts,
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            held_out=args.held_out,
            layers=args.layers,
            dim=args.dim,
            heads=args.heads,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
        )
        resolve_placement(args.device, "float32")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if len(checkpoints) < 2:
        raise UsageError(f"{args.teacher} has only one checkpoint; an age predictor needs at least two steps")
    if args.dim % args.heads:
        raise UsageError(f"--heads ({args.heads}) must divide --dim ({args.dim})")
    out: Path = args.out
    if (out / INFO_FILE).exists() and not args.force:
        raise UsageError(f"{out} already holds an age predictor; pass --force to replace it")
    if out.exists() and not (out / INFO_FILE).exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an age predictor directory; choose another --out")
    print(
        f"age predictor from {len(checkpoints)} checkpoints (steps {checkpoints[0][0]}..{checkpoints[-1][0]}) x "
        f"{config.contexts} contexts x {config.samples} samples",
        file=sys.stderr,
    )
    progress = _Progress()
    report = train_age_predictor(args.teacher, out, config, progress)
    progress.close()
    means = ", ".join(f"{step}: {score:.2f}" for step, score in report.mean_score.items())
    print(
        f"held-out Pearson r = {report.pearson_r:.3f} (n = {report.n_held_out} held-out texts, "
        f"{report.n_train} training texts), MSE {report.mse:.3f} in log2(step)"
    )
    print(f"mean held-out score by step (log2 step): {means}")
    print(f"age predictor -> {report.out} (set teacher.age_predictor to it on the teacher node)")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from student.tnd_report import write_report

    try:
        summary = write_report(args.run_dir, args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for line in summary.lines():
        print(line)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    handlers = {"train-teacher": _train_teacher, "train-reward": _train_reward, "report": _report}
    return handlers[args.tnd_command](args)
