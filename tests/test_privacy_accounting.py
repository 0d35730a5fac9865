"""Each mechanism's charge against the accountant libraries' own figures for the same parameters,
and the ledger: durable, composed, and never overspent, even by 200 concurrent requests."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

from node.privacy.accounting import (
    RDP_ORDERS,
    Accountant,
    AccountingError,
    Charge,
    dp_sgd_charge,
    epsilon_of,
    gnmax_charge,
    keyword_charge,
    lnmax_charge,
    rdp_curve,
)
from node.privacy.ledger import BudgetExhausted, PrivacyLedger, read_ledger
from node.store import Store

DELTA = 1e-6
ORDERS = list(RDP_ORDERS)


def google(event: dp_accounting.DpEvent, delta: float = DELTA) -> float:
    accountant = RdpAccountant(ORDERS)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("sigma", "rate", "steps"), [(1.0, 0.1, 100), (0.8, 0.01, 1000), (2.0, 0.05, 50)])
def test_dp_sgd_charge_is_what_opacus_accountant_says(sigma: float, rate: float, steps: int) -> None:
    opacus = RDPAccountant()
    opacus.history = [(sigma, rate, steps)]
    assert epsilon_of(dp_sgd_charge(sigma, rate, steps, 1.0), 1e-5) == pytest.approx(
        opacus.get_epsilon(1e-5, alphas=ORDERS), rel=1e-9
    )


def test_dp_sgd_charge_agrees_with_dp_accounting_where_its_orders_converge() -> None:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(2.0)), 50
    )
    assert epsilon_of(dp_sgd_charge(2.0, 0.05, 50, 1.0), 1e-5) == pytest.approx(google(event, 1e-5), rel=1e-6)


@pytest.mark.parametrize(("sigma", "queries"), [(40.0, 1), (10.0, 7), (2.0, 3)])
def test_gnmax_charge_is_a_gaussian_of_sensitivity_sqrt2(sigma: float, queries: int) -> None:
    charge = gnmax_charge(sigma, shards=16, queries=queries)
    # PATE's closed form: (alpha, alpha / sigma^2)-RDP per query.
    assert rdp_curve(charge) == pytest.approx(queries * np.asarray(ORDERS) / sigma**2, rel=1e-9)
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2)), queries)
    assert epsilon_of(charge, DELTA) == pytest.approx(google(event), rel=1e-6)
    rdp = opacus_rdp.compute_rdp(q=1.0, noise_multiplier=sigma / math.sqrt(2), steps=queries, orders=ORDERS)
    assert epsilon_of(charge, DELTA) == pytest.approx(
        opacus_rdp.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=DELTA)[0], rel=1e-9
    )


@pytest.mark.parametrize(("epsilon", "queries"), [(0.5, 1), (0.1, 20)])
def test_lnmax_charge_is_dp_accountings_laplace(epsilon: float, queries: int) -> None:
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(1 / epsilon), queries)
    assert epsilon_of(lnmax_charge(epsilon, 16, queries), DELTA) == pytest.approx(google(event), rel=1e-9)


def test_keyword_charge_composes_ptr_test_exponential_mechanism_and_ptr_delta() -> None:
    charge = keyword_charge(em_epsilon=1.0, keywords=8, ptr_epsilon=0.5, ptr_delta=1e-9, shards=16)
    rho = 8 * (1.0 / 8) ** 2 / 8  # k* exponential mechanisms of eps/k*, each (eps/k*)^2/8-zCDP
    event = dp_accounting.ComposedDpEvent([dp_accounting.LaplaceDpEvent(2.0), dp_accounting.ZCDpEvent(rho)])
    assert epsilon_of(charge, DELTA) == pytest.approx(google(event, DELTA - 1e-9), rel=1e-9)


def test_composition_is_rdp_additive_and_cheaper_than_summing() -> None:
    accountant = Accountant()
    for _ in range(50):
        accountant.compose(gnmax_charge(40.0, 16))
    alone = epsilon_of(gnmax_charge(40.0, 16), DELTA)
    assert accountant.epsilon(DELTA) == pytest.approx(epsilon_of(gnmax_charge(40.0, 16, queries=50), DELTA))
    assert alone < accountant.epsilon(DELTA) < 50 * alone


def test_used_up_delta_makes_epsilon_infinite_and_bad_charges_are_refused() -> None:
    accountant = Accountant()
    accountant.compose(keyword_charge(1.0, 8, 0.5, ptr_delta=DELTA, shards=16))
    assert accountant.epsilon(DELTA) == math.inf
    with pytest.raises(AccountingError, match="unknown mechanism"):
        Charge("magic", {}).event()
    with pytest.raises(AccountingError, match="sigma"):
        Charge("gnmax", {"queries": 1}).event()


# --- the ledger ------------------------------------------------------------------------------


def fifty_fit(charge: Charge) -> float:
    """A budget between the totals of 50 and 51 such charges."""
    accountant = Accountant()
    for _ in range(50):
        accountant.compose(charge)
    return (accountant.epsilon(DELTA) + accountant.with_charge(charge).epsilon(DELTA)) / 2


def test_ledger_is_durable_and_a_restart_composes_the_same_total(tmp_path: Path) -> None:
    store = Store(tmp_path / "agora.db")
    ledger = PrivacyLedger(store, epsilon_budget=10.0, delta=DELTA)
    charges = [gnmax_charge(20.0, 16), lnmax_charge(0.2, 16, 2), keyword_charge(1.0, 8, 0.5, 1e-9, 16)]
    events = [ledger.charge(c, recipient=f"student-{i}") for i, c in enumerate(charges)]
    ledger.settle(events[0].seq, "released", "ab" * 32)
    ledger.settle(events[1].seq, "blocked")
    spent = ledger.spent
    assert [e.epsilon_spent_after for e in events] == sorted(e.epsilon_spent_after for e in events)
    assert events[-1].epsilon_spent_after == pytest.approx(spent)
    store.close()

    again = PrivacyLedger(Store(tmp_path / "agora.db"), epsilon_budget=10.0, delta=DELTA)
    assert again.spent == pytest.approx(spent, rel=1e-12)
    rows = again.events()
    assert [(r.charge.mechanism, r.status) for r in rows] == [
        ("gnmax", "released"),
        ("lnmax", "blocked"),
        ("dp_icl_keyword", "charged"),
    ]
    assert rows[0].lesson_id == "ab" * 32 and rows[1].recipient == "student-1"
    summary = read_ledger(tmp_path, 10.0, DELTA)
    assert summary.spent == pytest.approx(spent) and len(summary.events) == 3
    assert summary.left == pytest.approx(10.0 - spent)


def test_200_concurrent_charges_against_a_budget_of_50_grant_exactly_50(tmp_path: Path) -> None:
    charge = gnmax_charge(40.0, 16)
    budget = fifty_fit(charge)
    ledger = PrivacyLedger(Store(tmp_path / "agora.db"), epsilon_budget=budget, delta=DELTA)
    granted, refused = [], []
    start = threading.Barrier(200)

    def request(index: int) -> None:
        start.wait()
        try:
            granted.append(ledger.charge(charge, recipient=f"s{index % 7}"))
        except BudgetExhausted as exc:
            refused.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 50 and len(refused) == 150
    assert len(ledger.events()) == 50
    assert ledger.spent <= budget
    assert all("exhausted" in str(exc) and exc.scope == "node" for exc in refused)


def test_per_recipient_sub_budget_refuses_one_student_not_the_others(tmp_path: Path) -> None:
    charge = gnmax_charge(10.0, 16)
    cap = epsilon_of(gnmax_charge(10.0, 16, queries=3), DELTA) * 1.0001
    ledger = PrivacyLedger(Store(tmp_path / "agora.db"), epsilon_budget=100.0, delta=DELTA, per_recipient_epsilon=cap)
    for _ in range(3):
        ledger.charge(charge, recipient="alice")
    with pytest.raises(BudgetExhausted) as refused:
        ledger.charge(charge, recipient="alice")
    assert refused.value.scope == "recipient" and "per-recipient" in str(refused.value)
    ledger.charge(charge, recipient="bob")
    assert ledger.spent_by("alice") == pytest.approx(epsilon_of(gnmax_charge(10.0, 16, 3), DELTA))
    assert len(ledger.events()) == 4
