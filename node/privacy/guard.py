r"""The leakage guard: the last check on the final text of every outgoing lesson (DESIGN §3, point 3).

DP bounds what a mechanism can reveal in expectation; the guard refuses the concrete leaks that
matter anyway, whatever mechanism produced the text. All checks run, in this order, so a privacy
report lists every value; the first failed one names the block:

1. ``canary``: how many configured canaries occur in the text, compared casefolded with everything
   but letters and digits removed from both, so "4 8 2 1", "4-8-2-1" or "The vault code is: 4821" match
   ("4821", "the vault code is 4821"): a tiny char-level model may space or punctuate what it recites.
   This errs towards blocking: a canary also matches inside longer words or numbers and across word
   breaks, so configure the distinctive phrases that were planted rather than short bare codes.
2. ``verbatim_ngram``: tokens are words, ``re.findall(r"\w+", text.casefold())``; punctuation
   and signs are not tokens, so in a numeric task 8 tokens are 8 numbers, not 3 numbers with
   their brackets and minus signs (which made chance matches common). The value is the exact longest run of consecutive
   tokens shared with one private record; blocked when it reaches ``ngram``. A hashed index of the
   records' ``ngram``-grams built once gives the yes/no; the exact run is then measured against the
   records that share one. A passing value comes from hashed k-gram sets for k < ``ngram``, kept
   only up to k = 16 (memory grows with k): a passing run of 16 or more is reported as "at least 16".
3. ``levenshtein``: d(r, text) = min over substrings s of the text of Indel(r, s) / len(r) (edit
   distance by insertions and deletions only, as in Social Learning, Mohtashami et al. 2024), on
   casefolded, whitespace-collapsed strings; value = min over non-empty records; blocked when
   value < ``min_edit_distance``. The DP runs bit-parallel over the text (see `_indel`). Records
   whose character counts alone prove d >= threshold are skipped, and a DP stops once a row minimum
   proves the same; both give sound lower bounds, so the value is exact whenever the check blocks
   and is otherwise min(exact values, lower bounds), i.e. "at least" the true minimum.
4. ``pii`` (only with ``block_pii``): e-mail addresses, phone numbers (``+`` and 9-15 digits, or
   US formats such as (555) 123-4567 / 555-123-4567; a bare run of digits is not a phone number),
   Luhn-valid card numbers of 13-19 digits, and US SSNs ddd-dd-dddd.

Public baseline: with ``public_texts`` (public examples of the task) and the recipient's own
``request`` text, n-grams that occur in either never count, and a record blocks on edit distance
only when the lesson is closer to it than the threshold *and* than any public text and the request
are. Templated tasks (every arithmetic rationale shares its wording) are then not blocked by their
own public format, while a lesson that reproduces a record still is.

Details and reasons never quote the text, a private record or a canary: they go to logs and to
the FAILED_PRECONDITION message. `LeakageGuard.check` is pure and keeps no state, so one guard
serves concurrent requests.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

_TOKEN = re.compile(r"\w+")
_NOT_ALNUM = re.compile(r"[\W_]+")
_SHORTER_CAP = 16  # longest k-gram kept for reporting a passing verbatim run
_CHECK_EVERY = 16  # DP rows between two row-minimum checks (each costs about as much as 5 rows)
_PII = (
    ("e-mail address", re.compile(r"(?<![\w.+-])[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?![\w-])", re.I)),
    ("social security number", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")),
    ("card number", re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")),
    ("phone number", re.compile(r"(?<![\w+])\+\d(?:[\s.()-]{0,2}\d){8,14}(?!\d)")),
    ("phone number", re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)")),
)


def tokenize(text: str) -> list[str]:
    """The verbatim check's tokens: words (runs of letters, digits and _), casefolded."""
    return _TOKEN.findall(text.casefold())


def normalize(text: str) -> str:
    """Casefolded, whitespace runs collapsed to one space: what the edit distance compares."""
    return " ".join(text.casefold().split())


def luhn_valid(digits: str) -> bool:
    """Card numbers carry a Luhn check digit; requiring it spares most long numbers in lessons."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (1 + i % 2)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _char_masks(text: str) -> dict[str, int]:
    """For each character of the text, the int whose bit j-1 is set where text[j-1] is it."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return {
        chr(int(u)): int.from_bytes(np.packbits(codes == u, bitorder="little").tobytes(), "little")
        for u in np.unique(codes)
    }


def _bits(x: int, m: int) -> npt.NDArray[np.uint8]:
    """The low m bits of x as a 0/1 array, bit 0 first."""
    return np.unpackbits(np.frombuffer(x.to_bytes((m + 7) // 8, "little"), np.uint8), count=m, bitorder="little")


def _row_min(i: int, hp: int, hn: int, m: int) -> int:
    """min_j D[i][j], from row i's horizontal deltas (+1 bits in hp, -1 bits in hn) and D[i][0] = i."""
    return i + min(0, int((_bits(hp, m).astype(np.int32) - _bits(hn, m)).cumsum().min()))


def _indel(record: str, masks: dict[str, int], m: int, stop_ratio: float = math.inf) -> tuple[int, bool]:
    """Semi-global Indel distance of `record` against a text of length m given by its `_char_masks`.

    D[0][j] = 0, D[i][0] = i, D[i][j] = min(D[i-1][j] + 1, D[i][j-1] + 1, D[i-1][j-1] if r_i = t_j);
    the answer is min_j D[n][j]. Row by row, with bit j-1 of each int standing for column j (text
    position), the vertical delta v_j = D[i][j] - D[i-1][j] obeys, given h_j = D[i-1][j] - D[i-1][j-1]:
    a match sets v_j = -h_j; otherwise h_j = +1 keeps v_{j-1}, h_j = 0 adds one (at most up to +1) and
    h_j = -1 sets +1; v_0 = +1. So v_j = -1 on runs of h = +1 that start at a match, and v_j = 0 on runs
    of unmatched h = +1 that start where v turns 0; an integer addition propagates each run start
    along its run (carries), a row costs ~25 operations on ints of m bits instead of m Python steps.
    Returns (distance, exact). With `stop_ratio`, every `_CHECK_EVERY` rows the row minimum (which never
    decreases downwards, all costs being >= 0) is checked: once it / n >= stop_ratio, it returns (it, False).
    """
    n = len(record)
    if m == 0:
        return n, True
    full = (1 << m) - 1
    hp = hn = 0
    check = max(1, math.ceil(stop_ratio * n)) if stop_ratio < 1 else n  # row minima are <= i
    for i, ch in enumerate(record, 1):
        eq = masks.get(ch, 0)
        x = eq & hp
        vn = (((hp + x) ^ hp) | x) & hp
        h0 = full ^ (hp | hn)
        vns = vn << 1
        y = h0 & (eq | vns)
        run = (hp ^ x) | y
        vzs = ((((run + y) ^ run) | y) & run) << 1
        hn = (full ^ (vns | vzs)) & (eq | hn)
        hp = (vns | ((hp | (h0 & vzs)) & ~eq)) & full
        if i == check and i < n:
            low = _row_min(i, hp, hn, m)
            if low / n >= stop_ratio:
                return low, False
            check += _CHECK_EVERY
    return _row_min(n, hp, hn, m), True


def indel_distance(record: str, text: str) -> int:
    """min over substrings s of `text` of Indel(record, s), exact (no normalization, no early stop)."""
    return _indel(record, _char_masks(text), len(text))[0]


def squash(text: str) -> str:
    """What canaries are compared on: casefolded letters and digits only."""
    return _NOT_ALNUM.sub("", text.casefold())


@dataclass(frozen=True)
class CheckResult:
    """One check's measurement; `detail` is a sentence safe for logs (it quotes no private text)."""

    name: str
    value: float
    threshold: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class GuardVerdict:
    """All checks run on one text, in order; blocked as soon as one of them failed. `reason` is written
    to follow "the leakage guard blocked this lesson: " in a FAILED_PRECONDITION message."""

    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def blocked_by(self) -> str | None:
        return next((c.name for c in self.checks if not c.passed), None)

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        if not failed:
            return ""
        also = f"; also failed: {', '.join(c.name for c in failed[1:])}" if len(failed) > 1 else ""
        return f"the lesson {failed[0].detail} (check {failed[0].name}{also})."


class LeakageGuard:
    """Checks lesson texts against a teacher's private records and canaries; built once, then read-only."""

    def __init__(
        self,
        private_records: Sequence[str],
        canaries: Sequence[str] = (),
        *,
        ngram: int = 8,
        min_edit_distance: float = 0.3,
        block_pii: bool = False,
        public_texts: Sequence[str] = (),
    ) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, not {ngram}.")
        if not 0.0 <= min_edit_distance <= 1.0:
            raise ValueError(f"min_edit_distance must lie in [0, 1], not {min_edit_distance}.")
        self._records = tuple(private_records)
        self._ngram = ngram
        self._min_edit = min_edit_distance
        self._block_pii = block_pii
        seen: dict[tuple[str, str], int] = {}  # (squashed, normalized) canary -> its first index
        for i, c in enumerate(canaries):
            if normalize(c):
                seen.setdefault((squash(c), normalize(c)), i)
        self._canaries = tuple((i, sq, flat) for (sq, flat), i in seen.items())
        # verbatim_ngram: hash of each ngram-gram -> records holding it; hashes of shorter k-grams.
        self._grams: dict[int, list[int]] = {}
        self._shorter: tuple[set[int], ...] = tuple(set() for _ in range(min(ngram - 1, _SHORTER_CAP)))
        for r, rec in enumerate(self._records):
            toks = tokenize(rec)
            for i in range(len(toks)):
                for k, hashes in enumerate(self._shorter, 1):
                    if i + k <= len(toks):
                        hashes.add(hash(tuple(toks[i : i + k])))
                if i + ngram <= len(toks):
                    holders = self._grams.setdefault(hash(tuple(toks[i : i + ngram])), [])
                    if not holders or holders[-1] != r:
                        holders.append(r)
        # The public baseline: n-grams of public text never count, and a record only blocks on edit
        # distance when the lesson comes closer to it than public text does (templated tasks).
        public = "\n".join(public_texts)
        toks = tokenize(public)
        self._public_grams = {hash(tuple(toks[i : i + ngram])) for i in range(len(toks) - ngram + 1)}
        public_flat, public_masks = normalize(public), _char_masks(normalize(public))
        # levenshtein: normalized non-empty records, and their character counts for the prefilter.
        self._norm = [(r, s) for r, s in enumerate(map(normalize, self._records)) if s]
        alphabet = sorted({ch for _, s in self._norm for ch in s})
        self._column = {ch: k for k, ch in enumerate(alphabet)}
        self._baseline = {
            r: (_indel(rec, public_masks, len(public_flat), stop_ratio=min_edit_distance)[0] / len(rec))
            if public_flat
            else math.inf
            for r, rec in self._norm
        }
        self._counts: npt.NDArray[np.uint16] = np.zeros((len(self._norm), len(alphabet)), np.uint16)
        for row, (_, s) in enumerate(self._norm):
            for ch, count in Counter(s).items():
                self._counts[row, self._column[ch]] = min(count, 65535)  # clipping keeps the bound sound

    @classmethod
    def read_canaries(cls, path: Path) -> list[str]:
        """One canary per line; blank lines and lines starting with '#' are skipped."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            why = "it is not UTF-8 text" if isinstance(exc, UnicodeError) else exc.strerror or type(exc).__name__
            raise ValueError(f"cannot read the canaries file {path}: {why}.") from exc
        return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]

    def check(self, text: str, request: str = "") -> GuardVerdict:
        """Run every check on the final text of a lesson (pure: no state, no logging). `request` is
        what the recipient sent: text it already knows, which is public to it like public_texts."""
        checks = [
            self._check_canaries(text),
            self._check_ngrams(text, request),
            self._check_levenshtein(text, request),
        ]
        if self._block_pii:
            checks.append(self._check_pii(text))
        return GuardVerdict(tuple(checks))

    def _check_canaries(self, text: str) -> CheckResult:
        squashed, flat = squash(text), normalize(text)
        hits = [i for i, sq, c in self._canaries if (sq in squashed if sq else c in flat)]  # sq "": all punctuation
        if hits:
            which = ", ".join(f"#{i}" for i in hits)
            detail = f"contains {len(hits)} of {len(self._canaries)} configured canaries: {which}"
        else:
            detail = f"contains none of {len(self._canaries)} configured canaries"
        return CheckResult("canary", float(len(hits)), 0.0, not hits, detail)

    def _check_ngrams(self, text: str, request: str) -> CheckResult:
        toks, n = tokenize(text), self._ngram
        asked = tokenize(request)
        sent = {hash(tuple(asked[i : i + n])) for i in range(len(asked) - n + 1)}  # not merged: the public set is big
        starts: dict[tuple[str, ...], list[int]] = {}
        for i in range(len(toks) - n + 1):
            gram = tuple(toks[i : i + n])
            key = hash(gram)
            if key not in self._public_grams and key not in sent:  # public, or sent by the recipient: leaks nothing
                starts.setdefault(gram, []).append(i)
        holders = sorted({r for gram in starts for r in self._grams.get(hash(gram), ())})
        best, where = 0, -1
        for r in holders:  # exact longest run, seeded by the shared n-grams and extended
            rec = tokenize(self._records[r])
            for p in range(len(rec) - n + 1):
                for i in starts.get(tuple(rec[p : p + n]), ()):
                    if i and p and toks[i - 1] == rec[p - 1]:
                        continue  # not where a maximal run starts
                    length = n
                    while i + length < len(toks) and p + length < len(rec) and toks[i + length] == rec[p + length]:
                        length += 1
                    if length > best:
                        best, where = length, r
        if best >= n:
            detail = f"shares a {best}-token run with private record #{where}"
            return CheckResult("verbatim_ngram", float(best), float(n), False, detail)
        best = 0
        for k, hashes in enumerate(self._shorter, 1):
            if not any(hash(tuple(toks[i : i + k])) in hashes for i in range(len(toks) - k + 1)):
                break
            best = k
        if best == len(self._shorter) < n - 1:
            detail = f"shares a run of at least {best} tokens with a private record (blocked at {n})"
        else:
            detail = f"shares no run longer than {best} tokens with any private record (blocked at {n})"
        return CheckResult("verbatim_ngram", float(best), float(n), True, detail)

    def _check_levenshtein(self, text: str, request: str) -> CheckResult:
        thr, flat = self._min_edit, normalize(text)
        asked = normalize(request)
        if not self._norm:
            return CheckResult("levenshtein", 1.0, thr, True, "has no private records to be compared with")
        present = np.zeros(len(self._column), np.uint16)
        for ch, count in Counter(flat).items():
            if (col := self._column.get(ch)) is not None:
                present[col] = min(count, 65535)
        # Every character of r beyond its count in the whole text must be deleted: Indel >= that sum.
        excess = (self._counts - np.minimum(self._counts, present)).sum(axis=1, dtype=np.int64)
        masks, best, where, exact = _char_masks(flat), math.inf, -1, False
        for (r, rec), low in zip(self._norm, excess.tolist(), strict=True):
            if low / len(rec) >= thr:
                value, is_exact = low / len(rec), False
            else:
                dist, is_exact = _indel(rec, masks, len(flat), stop_ratio=thr)
                value = dist / len(rec)
                if value < thr and not self._closer_than_public(r, rec, value, asked):
                    value, is_exact = thr, False  # public text (or the request) comes as close: no leak
            if value < best:
                best, where, exact = value, r, is_exact
        if best < thr:
            detail = f"is within normalized edit distance {best:.3f} of private record #{where} (blocked below {thr:g})"
            return CheckResult("levenshtein", best, thr, False, detail)
        bound = "" if exact else "at least "
        detail = (
            f"keeps a normalized edit distance of {bound}{best:.3f} from every private record (blocked below {thr:g})"
        )
        return CheckResult("levenshtein", best, thr, True, detail)

    def _closer_than_public(self, r: int, rec: str, value: float, asked: str) -> bool:
        """Whether the lesson is closer to record r than public text and the request are."""
        if value >= self._baseline[r]:
            return False
        if not asked:
            return True
        return value < _indel(rec, _char_masks(asked), len(asked), stop_ratio=value + 1e-9)[0] / len(rec)

    def _check_pii(self, text: str) -> CheckResult:
        taken: list[tuple[int, int]] = []
        kinds: list[str] = []
        for kind, pattern in _PII:
            for m in pattern.finditer(text):
                a, b = m.span()
                if any(a < y and x < b for x, y in taken):
                    continue  # one span is one match (an SSN is not also a phone number)
                if kind == "card number" and not luhn_valid(re.sub(r"\D", "", m.group())):
                    continue
                taken.append((a, b))
                kinds.append(kind)
        found = ", ".join(sorted(set(kinds))) or "no personal data"
        detail = f"contains {len(kinds)} personal-data matches ({found})"
        return CheckResult("pii", float(len(kinds)), 0.0, not kinds, detail)
