"""`agora audit`: the Secret Sharer audit of a model against planted canaries (DESIGN §3.4).

agora audit --model models/student --task word_sorting --canaries canaries.txt
agora audit --model models/student --task word_sorting --canaries canaries.txt --format json

The table shows each canary with its secret masked, so the audit's own output never leaks it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli_errors import EXIT_OK, UsageError, table_lines

if TYPE_CHECKING:
    from node.privacy.audit import AuditReport, Canary


def add_command(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="Secret Sharer audit: how highly a model ranks planted canaries among random candidates",
        description="For each canary (a context ending in a secret: digits or a first name), draw --candidates "
        "candidates of the same kind, the planted secret among them, and score each as a continuation of the "
        "context (mean per-token log-likelihood). Report the secret's rank (0 = the model's favourite, about "
        "half of --candidates = nothing memorized), rank-0 count and exposure over --runs draws.",
        epilog="example: agora audit --model models/student --task word_sorting --canaries canaries.txt --runs 5",
    )
    audit.add_argument("--model", required=True, type=Path, metavar="DIR", help="model directory to audit")
    audit.add_argument("--task", required=True, help="task the model was built for (its tokenizer's vocabulary)")
    audit.add_argument(
        "--canaries",
        required=True,
        type=Path,
        metavar="FILE",
        help="planted canaries, one per line, e.g. 'my pin code is 4821' ('#' lines and blank lines skipped)",
    )
    audit.add_argument("--runs", type=int, default=5, metavar="T", help="independent candidate draws (default 5)")
    audit.add_argument(
        "--candidates",
        type=int,
        default=1000,
        metavar="N",
        help="candidates per draw, the secret included (default 1000)",
    )
    audit.add_argument("--seed", type=int, default=0, help="run r draws its candidates with seed S+r (default 0)")
    audit.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    audit.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    audit.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default auto)",
    )


def _read_canaries(path: Path, candidates: int) -> list[Canary]:
    from node.privacy.audit import CanaryError, parse_canaries, space_size

    try:
        canaries = parse_canaries(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the canaries file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the canaries file {path} is not UTF-8 text") from None
    except CanaryError as exc:
        raise UsageError(f"{path}: {exc}") from None
    for canary in canaries:
        if space_size(canary) < candidates:
            raise UsageError(
                f"{path}: line {canary.line}: its secret allows only {space_size(canary)} candidates, "
                f"fewer than --candidates {candidates}"
            )
    return canaries


def _load(args: argparse.Namespace) -> Any:
    from node.cli_model import _check_vocabulary, _task
    from node.llm import ModelHost, ModelLoadError, PlacementError, resolve_placement

    task = _task(args.task)  # an unknown task is a usage error before the (slow) model load
    model_dir: Path = args.model.expanduser()
    if not model_dir.is_dir():
        raise UsageError(f"no model directory at {model_dir}")
    if not os.access(model_dir, os.R_OK | os.X_OK):
        raise UsageError(f"cannot read the model directory {model_dir}: permission denied")
    try:
        host = ModelHost.load(model_dir, resolve_placement(args.device, args.dtype))
    except (ModelLoadError, PlacementError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot load the model from {model_dir}: {exc.strerror or exc}") from None
    _check_vocabulary(host, task, str(model_dir))
    return host


def _number(rank: float) -> str:
    return f"{rank:.1f}" if rank != int(rank) else f"{int(rank)}"


def render_table(report: AuditReport) -> str:
    columns = ["CANARY", "KIND", "MEAN RANK", "MIN RANK", "RANK 0", "EXPOSURE"]
    rows = [
        [
            r.canary.masked,
            r.canary.kind,
            f"{r.mean_rank:.1f}",
            _number(r.min_rank),
            f"{r.rank0_count}/{report.runs}",
            f"{r.exposure:.2f}",
        ]
        for r in report.results
    ]
    lines = table_lines(columns, rows, right_from=2)  # text left, numbers right, so digits line up
    summary = (
        f"{len(report.results)} canaries x {report.runs} runs of {report.candidates} candidates: mean rank "
        f"{report.mean_rank:.1f} (chance {report.chance_rank:.1f}), rank 0 in {report.rank0_count} of "
        f"{len(report.results) * report.runs} runs, mean exposure {report.mean_exposure:.2f} of "
        f"{report.max_exposure:.2f} bits"
    )
    return "\n".join([*lines, summary])


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from node.privacy.audit import audit

    if args.candidates < 2:
        raise UsageError(f"--candidates must be at least 2, got {args.candidates}")
    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1, got {args.runs}")
    canaries = _read_canaries(args.canaries, args.candidates)
    host = _load(args)
    # A live bar only on a terminal: logs and pipes get the result alone.
    bar = tqdm(total=0, unit="cand", file=sys.stderr, dynamic_ncols=True, disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = audit(host, canaries, runs=args.runs, candidates=args.candidates, seed=args.seed, progress=progress)
    finally:
        bar.close()
        host.close()
    for result in report.results:
        if result.unknown_tokens:
            print(
                f"agora audit: warning: line {result.canary.line}: the model's tokenizer has no token for "
                f"{result.unknown_tokens} symbol(s) of this canary, so its rank may mean little",
                file=sys.stderr,
            )
    print(report.to_json() if args.format == "json" else render_table(report))
    return EXIT_OK
