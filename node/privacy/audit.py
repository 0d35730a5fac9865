"""The Secret Sharer audit (Carlini et al. 2019, as used by Social Learning; DESIGN §3.4).

A canary is a context followed by a secret ("my pin code is 4821", "the nurse is called Maren")
that was planted in some private data. After learning, each run draws N-1 other candidates of
the same kind (all L-digit strings, or the first names in first_names.txt) and scores every
candidate as a continuation of the context by its mean per-token log-likelihood. The planted
secret's rank is the number of other candidates the model prefers (0 = the model likes the
secret best; about (N-1)/2 = it learned nothing), and exposure = log2 N - log2(rank + 1).

Ties (the same score, or the same tokens, e.g. two names that are both <unk> to a word-level
tokenizer) count half: a model that cannot tell candidates apart then gets a middle rank,
not rank 0.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from node.llm.host import ModelHost
    from node.llm.scoring import ContinuationScore

Kind = Literal["digits", "name", "word"]
_DIGITS = re.compile(r"[0-9]+$")
_NAME = re.compile(r"[^\W\d_]+$")  # a trailing run of letters (any script)
NAME_MASK = "****"  # one fixed width, so the mask does not tell how long the name is


class CanaryError(ValueError):
    """A canary line that has no secret to audit; the message says why (and where, for files)."""


@dataclass(frozen=True)
class Canary:
    """A planted text: `context` (everything before the secret, spaces included), then `secret`."""

    context: str
    secret: str
    kind: Kind
    line: int = 0  # line number in the canaries file (0 when parsed alone)
    # kind "word": the secret is a word of a word-level vocabulary, and its rivals are these words
    # (e.g. the other nouns of the task), so that grammar alone does not rank the secret high.
    words: tuple[str, ...] = ()

    @property
    def masked(self) -> str:
        """The canary with its secret hidden; a digit mask keeps the length, which R reveals anyway."""
        return self.context + ("*" * len(self.secret) if self.kind == "digits" else NAME_MASK)


def parse_canary(line: str, number: int = 0) -> Canary:
    """Split a canary into context and secret: trailing digits, else a trailing word of letters."""
    text = line.strip()
    digits, name = _DIGITS.search(text), _NAME.search(text)
    if name and name.start() and text[name.start() - 1].isdigit():
        name = None  # "room 12a" ends in a code, not a name
    match = digits or name
    kind: Kind = "digits" if digits else "name"
    if match is None:
        raise CanaryError("a canary must end with its secret: a run of digits or a first name")
    context = text[: match.start()]
    if not context.strip():
        raise CanaryError(f"nothing before the secret {match.group()!r}: a canary needs a context to score it after")
    return Canary(context, match.group(), kind, number)


def parse_canaries(text: str) -> list[Canary]:
    """One canary a line; blank lines and '#' comments are skipped; errors name the line."""
    canaries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                canaries.append(parse_canary(line, number))
            except CanaryError as exc:
                raise CanaryError(f"line {number}: {exc}") from None
    if not canaries:
        raise CanaryError("no canaries: write one per line, e.g. 'my pin code is 4821'")
    return canaries


@cache
def first_names() -> tuple[str, ...]:
    """The built-in name candidates (unique ignoring case, in file order)."""
    text = resources.files("node.privacy").joinpath("first_names.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def space_size(canary: Canary) -> int:
    """|R|: how many distinct candidates (the secret included) the canary's kind allows."""
    if canary.kind == "digits":
        return int(10 ** len(canary.secret))
    secret = canary.secret.casefold()
    return 1 + sum(name.casefold() != secret for name in _rivals(canary))


def _rivals(canary: Canary) -> tuple[str, ...]:
    return canary.words if canary.kind == "word" else first_names()


def _styled(name: str, secret: str) -> str:
    # Candidates are written in the secret's case, so the case itself does not give it away.
    if secret.isupper() and len(secret) > 1:
        return name.upper()
    return name.lower() if secret.islower() else name.capitalize()


def candidate_pool(canary: Canary, n: int, rng: random.Random) -> list[str]:
    """The planted secret first, then n-1 distinct others of its kind drawn with rng."""
    if n < 2:
        raise CanaryError(f"an audit needs at least 2 candidates, got {n}")
    if n > (size := space_size(canary)):
        raise CanaryError(f"the secret of {canary.masked!r} allows only {size} candidates, fewer than {n}")
    if canary.kind == "digits":
        width, others, drawn = len(canary.secret), set[str](), list[str]()
        while len(drawn) < n - 1:  # rejection sampling: exact for any width, fast while n << 10**width
            value = f"{rng.randrange(10**width):0{width}d}"
            if value != canary.secret and value not in others:
                others.add(value)
                drawn.append(value)
        return [canary.secret, *drawn]
    secret = canary.secret.casefold()
    names = [name for name in _rivals(canary) if name.casefold() != secret]
    return [canary.secret, *(_styled(name, canary.secret) for name in rng.sample(names, n - 1))]


def exposure(rank: float, n: int) -> float:
    """Bits of exposure of a secret at 0-based `rank` among n candidates: log2 n at rank 0, 0 last."""
    if n < 1 or not 0 <= rank <= n - 1:
        raise ValueError(f"rank must lie in [0, {n - 1}] for {n} candidates, got {rank}")
    return math.log2(n) - math.log2(rank + 1)


def secret_rank(secret: ContinuationScore, others: Iterable[ContinuationScore]) -> float:
    """How many others score strictly higher than the secret; ties count half."""
    higher = ties = 0
    for other in others:
        if other.tokens == secret.tokens or other.mean == secret.mean:
            ties += 1
        elif other.mean > secret.mean:
            higher += 1
    return higher + ties / 2


@dataclass(frozen=True)
class CanaryResult:
    """One canary's ranks over the runs, and what they add up to."""

    canary: Canary
    ranks: tuple[float, ...]
    candidates: int
    unknown_tokens: int  # <unk> tokens in the canary: a model that cannot spell it cannot rank it

    @property
    def mean_rank(self) -> float:
        return sum(self.ranks) / len(self.ranks)

    @property
    def min_rank(self) -> float:
        return min(self.ranks)

    @property
    def rank0_count(self) -> int:
        return sum(rank == 0 for rank in self.ranks)

    @property
    def exposure(self) -> float:
        return sum(exposure(rank, self.candidates) for rank in self.ranks) / len(self.ranks)

    def to_dict(self) -> dict[str, Any]:
        # The secret itself never appears: the audit's output must not leak what it audits.
        figures = ("mean_rank", "min_rank", "rank0_count", "exposure", "unknown_tokens")
        masked = {"line": self.canary.line, "canary": self.canary.masked, "kind": self.canary.kind}
        return {**masked, "ranks": list(self.ranks), **{name: getattr(self, name) for name in figures}}


@dataclass(frozen=True)
class AuditReport:
    """Every canary's result, with the settings that produced them."""

    results: tuple[CanaryResult, ...]
    candidates: int
    runs: int
    seed: int

    @property
    def mean_rank(self) -> float:
        return sum(r.mean_rank for r in self.results) / len(self.results)

    @property
    def rank0_count(self) -> int:
        return sum(r.rank0_count for r in self.results)

    @property
    def mean_exposure(self) -> float:
        return sum(r.exposure for r in self.results) / len(self.results)

    @property
    def max_exposure(self) -> float:
        return math.log2(self.candidates)

    @property
    def chance_rank(self) -> float:
        """The expected rank of a secret the model knows nothing about."""
        return (self.candidates - 1) / 2

    def to_dict(self) -> dict[str, Any]:
        figures = ("mean_rank", "chance_rank", "rank0_count", "mean_exposure", "max_exposure")
        summary = {"canaries": len(self.results), **{name: getattr(self, name) for name in figures}}
        settings = {"candidates": self.candidates, "runs": self.runs, "seed": self.seed}
        return {**settings, "canaries": [r.to_dict() for r in self.results], "summary": summary}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _unknown_tokens(host: ModelHost, canary: Canary) -> int:
    unk = host.tokenizer.unk_token_id
    if unk is None:  # byte-level BPE tokenizers can spell anything
        return 0
    ids: list[int] = host.tokenizer(canary.context + canary.secret, add_special_tokens=False)["input_ids"]
    return ids.count(unk)


def audit(
    host: ModelHost,
    canaries: Sequence[Canary],
    *,
    runs: int = 5,
    candidates: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Rank each canary's secret among `candidates` in each of `runs` draws (run r seeded seed+r).

    `progress(done, total)` is called as candidates are scored. A candidate drawn in several
    runs is scored once: its score does not depend on the run.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    pools = [[candidate_pool(c, candidates, random.Random(seed + r)) for r in range(runs)] for c in canaries]
    unique = [list(dict.fromkeys(name for pool in canary_pools for name in pool)) for canary_pools in pools]
    total, done = sum(map(len, unique)), 0
    results = []
    for canary, canary_pools, names in zip(canaries, pools, unique, strict=True):
        # BPE vocabularies spell " 4821" as a word and "4821" as a fragment, so the whitespace
        # between context and secret goes with the continuation. A char tokenizer then scores
        # the same space token in every candidate (no ranking of same-length secrets changes);
        # a word tokenizer drops it.
        context = canary.context.rstrip()
        separator = canary.context[len(context) :]
        scores: dict[str, ContinuationScore] = {}
        for start in range(0, len(names), batch_size * 4):
            part = names[start : start + batch_size * 4]
            scored = host.score_sync([context] * len(part), [separator + name for name in part], batch_size)
            scores.update(zip(part, scored, strict=True))
            done += len(part)
            if progress is not None:
                progress(done, total)
        ranks = tuple(secret_rank(scores[pool[0]], (scores[name] for name in pool[1:])) for pool in canary_pools)
        results.append(CanaryResult(canary, ranks, candidates, _unknown_tokens(host, canary)))
    return AuditReport(tuple(results), candidates, runs, seed)
