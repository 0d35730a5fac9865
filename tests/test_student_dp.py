"""DP-SGD on the student's own data: the spend lands in the node's ledger and equals Opacus's figure."""

from __future__ import annotations

import asyncio

import pytest
import torch
from opacus.accountants import RDPAccountant

from node.app import Node
from node.privacy.ledger import BudgetExhausted
from node.store import read_rows
from student.build import build_student
from tests.nodes import started
from tests.students import student_settings


def test_dp_sgd_spend_is_recorded_in_the_ledger_and_matches_opacus() -> None:
    node = Node(student_settings([], algorithm="sft", dp_epsilon=1.0, dp_records=16, dp_expected_batch=4))

    async def body() -> None:
        async with started(node):
            run = build_student(node.settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)
            before = [p.detach().clone() for p in run.ctx.host.model.parameters()]
            summary = await run.run()
            after = list(run.ctx.host.model.parameters())
            assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # it did train
            assert summary.finished_early and summary.steps_done == 0  # all of the SFT was the DP run
            events = run.ledger.events()
            assert [(e.charge.mechanism, e.status, e.recipient) for e in events] == [("dp_sgd", "released", "")]
            parameters = events[0].charge.parameters
            sigma, q, steps = parameters["noise_multiplier"], parameters["sample_rate"], int(parameters["steps"])
            assert q == 4 / 16 and steps == 4
            opacus = RDPAccountant()
            opacus.history = [(sigma, q, steps)]
            delta = node.settings.privacy.delta
            expected = opacus.get_epsilon(delta=delta)
            assert events[0].epsilon == pytest.approx(expected, rel=1e-9)
            assert run.ledger.spent == pytest.approx(expected, rel=1e-9)
            assert expected <= 1.0 and expected == pytest.approx(1.0, rel=0.01)  # the target epsilon, from below
            assert node.metrics.epsilon_spent._value.get() == pytest.approx(expected)

    asyncio.run(body())
    rows = read_rows(node.settings.node.data_dir, "SELECT mechanism, status FROM privacy_events")
    assert rows == [("dp_sgd", "released")]  # durable


def test_dp_sgd_past_the_budget_is_refused_before_training() -> None:
    settings = student_settings([], algorithm="sft", dp_epsilon=1.0, dp_records=16, dp_expected_batch=4)
    settings.privacy.epsilon_budget = 0.5
    node = Node(settings)

    async def body() -> None:
        async with started(node):
            run = build_student(node.settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)
            before = [p.detach().clone() for p in run.ctx.host.model.parameters()]
            with pytest.raises(BudgetExhausted, match="privacy budget is exhausted"):
                await run.run()
            assert all(torch.equal(a, b) for a, b in zip(before, run.ctx.host.model.parameters(), strict=True))
            assert run.ledger.events() == [] and run.ledger.spent == 0

    asyncio.run(body())
