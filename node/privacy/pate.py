"""PATE subsample-and-aggregate: disjoint shards of private data vote, a noisy argmax answers.

Each shard holds different private records, so one record changes one shard's vote: one count
goes down by one and another up by one. GNMax adds Gaussian noise of std sigma to every count
(Papernot et al. 2018); LNMax adds Laplace noise of scale 2/epsilon (Papernot et al. 2017). The
classes must be fixed before the vote (never proposed by the private data), or the class set
itself would leak; the teacher's methods vote over public candidates for that reason. The
privacy cost of a query is `accounting.gnmax_charge` / `lnmax_charge`, charged by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoisyVote:
    """How to add noise to vote counts: GNMax (sigma) or LNMax (epsilon per query)."""

    sigma: float | None = None
    laplace_epsilon: float | None = None

    def __post_init__(self) -> None:
        if (self.sigma is None) == (self.laplace_epsilon is None):
            raise ValueError("a noisy vote needs exactly one of sigma (GNMax) or laplace_epsilon (LNMax)")

    @property
    def mechanism(self) -> str:
        return "gnmax" if self.sigma is not None else "lnmax"

    def noisy_counts(self, counts: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        values = np.asarray(counts, dtype=np.float64)
        if self.sigma is not None:
            return values + rng.normal(0.0, self.sigma, size=values.shape)
        assert self.laplace_epsilon is not None
        return values + rng.laplace(0.0, 2.0 / self.laplace_epsilon, size=values.shape)

    def argmax(self, counts: Sequence[int], rng: np.random.Generator) -> int:
        """The index of the largest noisy count (ties go to the lower index)."""
        if not len(counts):
            raise ValueError("a vote needs at least one class")
        return int(np.argmax(self.noisy_counts(counts, rng)))


def tally(votes: Sequence[int], classes: int) -> list[int]:
    """Vote counts per class from one vote (a class index) per shard; -1 abstains."""
    counts = [0] * classes
    for vote in votes:
        if vote >= 0:
            counts[vote] += 1
    return counts
