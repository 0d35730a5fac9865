"""DP-ICL keyword-space aggregation (Wu et al., ICLR 2024), for instruction lessons.

Every shard's response is reduced to its set of words (a response counts a word once, so one
private record moves each count by at most one). Counts are taken over a *public* vocabulary
only, since a vocabulary proposed by the responses would leak. The top-k* words are released by
propose-test-release when the k*-th and (k*+1)-th counts are far apart (a Laplace test of the
distance to instability; the exact top-k* then costs only delta), else drawn k* times without
replacement by the exponential mechanism. The caller charges `accounting.keyword_charge`: the
test, the delta and the exponential mechanism, whichever branch runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"[a-z][a-z'-]*")

# Words instructions are made of, whatever the task: the public part of every vocabulary.
_INSTRUCTION_TEXT = """
a about add after all alphabet alphabetically and answer answers any are as at back backward be
before between by calculate character characters check combine compute copy count digit digits each
end equal equation every example expression find first follow following for forward from give given
how if in input insert into is it its last left length letter letters line list multiply next not
number numbers of on one operation operations order output parentheses part position put random
remove result reverse reversed right same sentence sentences shift shifted solve sort sorted space
step steps string strings subtract sum that the then this to transform transformed two use value
values what when which with word words write you your
"""
INSTRUCTION_WORDS = frozenset(_INSTRUCTION_TEXT.split())


def words_of(text: str) -> set[str]:
    return set(WORD.findall(text.casefold()))


@dataclass(frozen=True)
class KeywordRelease:
    """The selected keywords, and how: "ptr" (exact top-k*) or "exponential"."""

    keywords: list[str]
    route: str
    distance: int  # the true distance to instability (never released; for tests and logs only)


def vocabulary(public_texts: Iterable[str]) -> list[str]:
    """The public candidate words: the instruction words and those of public texts, sorted."""
    words = set(INSTRUCTION_WORDS)
    for text in public_texts:
        words |= words_of(text)
    return sorted(words)


def keyword_counts(responses: Sequence[str], vocab: Sequence[str]) -> np.ndarray:
    index = {word: i for i, word in enumerate(vocab)}
    counts = np.zeros(len(vocab), dtype=np.int64)
    for response in responses:
        for word in words_of(response):
            if word in index:
                counts[index[word]] += 1
    return counts


def select_keywords(
    responses: Sequence[str],
    vocab: Sequence[str],
    k: int,
    *,
    em_epsilon: float,
    ptr_epsilon: float,
    ptr_delta: float,
    rng: np.random.Generator,
) -> KeywordRelease:
    """Top-k* keywords of the shard responses, by PTR or the exponential mechanism."""
    if not 1 <= k < len(vocab):
        raise ValueError(f"k* must be between 1 and the vocabulary size - 1, not {k}")
    counts = keyword_counts(responses, vocab)
    order = np.argsort(-counts, kind="stable")
    gap = int(counts[order[k - 1]] - counts[order[k]])
    distance = max(0, (gap - 1) // 2)  # shards that may change before the top-k* set can change
    threshold = math.log(1 / (2 * ptr_delta)) / ptr_epsilon
    if distance + rng.laplace(0.0, 1 / ptr_epsilon) > threshold:
        return KeywordRelease([vocab[i] for i in order[:k]], "ptr", distance)
    chosen: list[int] = []
    available = np.ones(len(vocab), dtype=bool)
    step_epsilon = em_epsilon / k
    for _ in range(k):  # exponential mechanism, utility = count, sensitivity 1
        logits = np.where(available, step_epsilon * counts / 2, -np.inf)
        gumbel = rng.gumbel(size=len(vocab))  # argmax of logits + Gumbel noise samples exp-mech exactly
        pick = int(np.argmax(logits + gumbel))
        chosen.append(pick)
        available[pick] = False
    return KeywordRelease([vocab[i] for i in chosen], "exponential", distance)
