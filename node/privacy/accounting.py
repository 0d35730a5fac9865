"""DP events for every mechanism a teacher runs, and their composition into epsilon(delta).

Every release is described as a `Charge`: the mechanism's name and parameters (what the ledger
stores, as JSON) and the `dp_accounting` event they stand for (rebuilt from the parameters, so
a restarted node composes exactly what it composed before). Composition is Rényi DP over
Opacus's default orders, which makes the DP-SGD figures agree with Opacus's own accountant:

- GNMax (PATE): Gaussian noise of std sigma on shard vote counts; one shard moves two counts by
  one, so the L2 sensitivity is sqrt(2) and the event is Gaussian with noise multiplier
  sigma / sqrt(2), i.e. (alpha, alpha / sigma^2)-RDP per query (Papernot et al. 2018).
- LNMax (PATE): Laplace noise on vote counts (L1 sensitivity 2) calibrated to epsilon per query:
  a Laplace event with noise multiplier 1 / epsilon.
- DP-ICL keyword selection (Wu et al. 2024): k* draws of the exponential mechanism, each
  (epsilon / k*)-DP with utility sensitivity 1 (a shard counts a word once). The exponential
  mechanism is bounded-range, hence (eps^2 / 8)-zCDP (Cesar and Rogers 2021): a zCDP event.
- Propose-test-release: a Laplace test of the distance to instability (sensitivity 1) and the
  delta of releasing the exact top-k* when it passes. A keyword release always pays the test,
  the delta and the exponential-mechanism fallback: which branch runs depends on the data.
- DP-SGD (Opacus): Poisson-sampled Gaussian, composed over the training steps.

A PTR delta is pure delta: it is taken off the node's delta before the RDP total is converted,
so epsilon is always stated at the configured delta overall.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import dp_accounting
import numpy as np
from dp_accounting.rdp import RdpAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

# Opacus's RDPAccountant.DEFAULT_ALPHAS, plus large orders: a few low-noise-per-shard PATE
# queries are tightest at high orders. Tests give Opacus the same orders to compare figures.
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 96, 128, 256, 512, 1024]
)

MECHANISMS = ("gnmax", "lnmax", "dp_icl_keyword", "dp_sgd", "none")
# Not a mechanism: what a lesson written from a prompt of private examples says (Social
# Learning's own Instruct and Exemplify, teacher.verbal). It is never charged, and the accountant
# refuses it, so that nothing can record it as a DP event of epsilon 0.
NOT_DP = "private_prompt_not_dp"


class AccountingError(ValueError):
    """A charge whose mechanism or parameters the accountant cannot compose."""


@dataclass(frozen=True)
class Charge:
    """What one release costs: a mechanism and the parameters that determine its privacy loss."""

    mechanism: str
    parameters: Mapping[str, float] = field(default_factory=dict)

    def event(self) -> dp_accounting.DpEvent:
        """The dp_accounting event these parameters stand for."""
        p = self.parameters
        try:
            if self.mechanism == "gnmax":
                step: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(p["sigma"] / math.sqrt(2))
                return dp_accounting.SelfComposedDpEvent(step, int(p["queries"]))
            if self.mechanism == "lnmax":
                step = dp_accounting.LaplaceDpEvent(1 / p["epsilon"])
                return dp_accounting.SelfComposedDpEvent(step, int(p["queries"]))
            if self.mechanism == "dp_icl_keyword":
                # Which branch runs depends on the data, so both are always paid: the PTR test,
                # and the exponential-mechanism fallback it may take.
                rho = p["keywords"] * (p["em_epsilon"] / p["keywords"]) ** 2 / 8
                test = dp_accounting.LaplaceDpEvent(1 / p["ptr_epsilon"])
                return dp_accounting.ComposedDpEvent([test, dp_accounting.ZCDpEvent(rho)])
            if self.mechanism == "dp_sgd":
                sampled = dp_accounting.PoissonSampledDpEvent(
                    p["sample_rate"], dp_accounting.GaussianDpEvent(p["noise_multiplier"])
                )
                return dp_accounting.SelfComposedDpEvent(sampled, int(p["steps"]))
            if self.mechanism == "none":
                return dp_accounting.NoOpDpEvent()
        except KeyError as exc:
            raise AccountingError(f"{self.mechanism} charge lacks the parameter {exc.args[0]!r}") from None
        raise AccountingError(f"unknown mechanism {self.mechanism!r}; known: {', '.join(MECHANISMS)}")

    @property
    def pure_delta(self) -> float:
        """Delta paid outright (propose-test-release), outside the RDP composition."""
        return float(self.parameters.get("ptr_delta", 0.0))

    def to_json(self) -> str:
        return json.dumps(dict(sorted(self.parameters.items())))

    @classmethod
    def from_json(cls, mechanism: str, text: str) -> Charge:
        return cls(mechanism, {str(k): float(v) for k, v in json.loads(text).items()})


def rdp_curve(charge: Charge) -> np.ndarray:
    """The charge's RDP epsilon at each of RDP_ORDERS. Gaussian mechanisms (GNMax, DP-SGD) use
    Opacus's analysis, so DP-SGD costs what Opacus's accountant says; the rest dp_accounting's."""
    p = charge.parameters
    if charge.mechanism in ("gnmax", "dp_sgd"):
        if charge.mechanism == "gnmax":
            q, sigma, steps = 1.0, p["sigma"] / math.sqrt(2), int(p["queries"])
        else:
            q, sigma, steps = p["sample_rate"], p["noise_multiplier"], int(p["steps"])
        return np.asarray(rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(RDP_ORDERS)))
    accountant = RdpAccountant(list(RDP_ORDERS))
    accountant.compose(charge.event())
    return np.asarray(accountant.rdp, dtype=np.float64)


class Accountant:
    """A running RDP composition with the pure delta spent beside it; cheap to copy."""

    def __init__(self) -> None:
        self.rdp = np.zeros(len(RDP_ORDERS))
        self.pure_delta = 0.0
        self.events = 0

    def compose(self, charge: Charge) -> None:
        self.rdp = self.rdp + rdp_curve(charge)
        self.pure_delta += charge.pure_delta
        self.events += 1

    def with_charge(self, charge: Charge) -> Accountant:
        """A copy with one more charge: what the total would become (self is unchanged)."""
        trial = Accountant()
        trial.rdp, trial.pure_delta, trial.events = self.rdp.copy(), self.pure_delta, self.events
        trial.compose(charge)
        return trial

    def epsilon(self, delta: float) -> float:
        """epsilon of everything composed so far, stated at total delta (inf if delta is used up)."""
        if not self.rdp.any():
            return 0.0
        remaining = delta - self.pure_delta
        if remaining <= 0:
            return math.inf
        with warnings.catch_warnings():  # "optimal order is the largest alpha": expected for tiny totals
            warnings.simplefilter("ignore", UserWarning)
            epsilon, _ = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(self.rdp), delta=remaining)
        return float(epsilon)


def epsilon_of(charge: Charge, delta: float) -> float:
    """The epsilon of one charge on its own at delta: what its PrivacyReport says it cost."""
    accountant = Accountant()
    accountant.compose(charge)
    return accountant.epsilon(delta)


def gnmax_charge(sigma: float, shards: int, queries: int = 1) -> Charge:
    return Charge("gnmax", {"sigma": sigma, "shards": shards, "queries": queries})


def lnmax_charge(epsilon: float, shards: int, queries: int = 1) -> Charge:
    return Charge("lnmax", {"epsilon": epsilon, "shards": shards, "queries": queries})


def dp_sgd_charge(noise_multiplier: float, sample_rate: float, steps: int, max_grad_norm: float) -> Charge:
    parameters = {
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "max_grad_norm": max_grad_norm,
    }
    return Charge("dp_sgd", parameters)


def keyword_charge(em_epsilon: float, keywords: int, ptr_epsilon: float, ptr_delta: float, shards: int) -> Charge:
    parameters = {
        "em_epsilon": em_epsilon,
        "keywords": keywords,
        "ptr_epsilon": ptr_epsilon,
        "ptr_delta": ptr_delta,
        "shards": shards,
    }
    return Charge("dp_icl_keyword", parameters)
