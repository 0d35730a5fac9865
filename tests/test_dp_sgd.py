"""DP-SGD fine-tuning: the plan's epsilon against independent accountants, and real Opacus training
of a tiny Llama that must learn, count its steps, and come back as a plain model."""

from __future__ import annotations

import math

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.llm.sampling import SamplingParams
from node.llm.training import TrainingExample, encode_batch, weighted_lm_loss
from node.privacy.dp_sgd import DpSgdPlan, dp_finetune, per_example_loss, plan_dp_sgd
from node.tasks import get_task

ORDERS: list[float] = list(RDPAccountant.DEFAULT_ALPHAS)
OPACUS_ATTRIBUTES = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample", "summed_grad")
# Short, repetitive records: a few seconds of DP-SGD on 2 CPU cores is enough to learn them.
RECORDS = [
    TrainingExample("Q: (2 + 3) =\nAnswer: ", "5"),
    TrainingExample("Q: (4 - 1) =\nAnswer: ", "3"),
    TrainingExample("Q: (1 + 1) =\nAnswer: ", "2"),
]


def tiny_host() -> ModelHost:
    return ModelHost.build(get_task("arithmetic"), TinySpec(layers=1, dim=32, heads=2))


def opacus_epsilon(plan: DpSgdPlan) -> tuple[float, float]:
    """Epsilon and the best RDP order, from Opacus's analysis functions (not its accountant class)."""
    rdp = compute_rdp(q=plan.sample_rate, noise_multiplier=plan.noise_multiplier, steps=plan.steps, orders=ORDERS)
    epsilon, order = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=plan.delta)
    return float(epsilon), float(order)


def google_epsilon(plan: DpSgdPlan) -> float:
    step = dp_accounting.PoissonSampledDpEvent(plan.sample_rate, dp_accounting.GaussianDpEvent(plan.noise_multiplier))
    accountant = RdpAccountant(orders=ORDERS)
    accountant.compose(dp_accounting.SelfComposedDpEvent(step, plan.steps))
    return float(accountant.get_epsilon(plan.delta))


# Plans whose best RDP order is an integer, where both libraries evaluate the same exact sum.
INTEGER_ORDER_PLANS = [
    plan_dp_sgd(500, noise_multiplier=1.5, delta=1e-5, expected_batch=5, epochs=20),  # q=0.01, 2000 steps
    plan_dp_sgd(100, noise_multiplier=0.7, delta=1e-3, expected_batch=15, epochs=6),  # q=0.15, 40 steps
    plan_dp_sgd(10, noise_multiplier=0.5, delta=1e-5, expected_batch=10, epochs=5),  # q=1: no sampling
]


@pytest.mark.parametrize("plan", INTEGER_ORDER_PLANS, ids=["q=0.01", "q=0.15", "q=1"])
def test_plan_epsilon_matches_opacus_analysis_and_dp_accounting(plan: DpSgdPlan) -> None:
    epsilon, order = opacus_epsilon(plan)
    assert order.is_integer()
    assert plan.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert plan.epsilon == pytest.approx(google_epsilon(plan), rel=1e-6)


def test_at_a_fractional_order_dp_accounting_is_slightly_more_conservative() -> None:
    # At non-integer orders dp_accounting 0.6 sums |binomial terms| (an upper bound on the RDP),
    # where Opacus keeps their signs (exact); the epsilons then differ in the 5th digit.
    plan = plan_dp_sgd(100, noise_multiplier=1.0, delta=1e-5, expected_batch=8, epochs=1)
    epsilon, order = opacus_epsilon(plan)
    assert (plan.sample_rate, plan.steps, order) == (0.08, 13, 4.9)
    assert plan.epsilon == pytest.approx(epsilon, rel=1e-9)
    assert plan.epsilon <= google_epsilon(plan) <= plan.epsilon * (1 + 1e-3)


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
def test_target_epsilon_plans_land_at_or_just_under_the_target(target: float) -> None:
    plan = plan_dp_sgd(40, target_epsilon=target, delta=1e-5, expected_batch=3, epochs=5)
    assert (plan.sample_rate, plan.steps) == (3 / 40, 67)
    assert target * (1 - 2e-3) <= plan.epsilon <= target
    # Less noise would overspend: the plan's noise is (nearly) the least that meets the target.
    less = DpSgdPlan(plan.noise_multiplier * 0.99, plan.sample_rate, plan.steps, plan.max_grad_norm, plan.delta)
    assert less.epsilon > target


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_records": 1, "noise_multiplier": 1.0}, "at least 2 private records"),
        ({"n_records": 10, "noise_multiplier": 1.0, "expected_batch": 11}, "expected_batch must be between"),
        ({"n_records": 10, "noise_multiplier": 1.0, "expected_batch": 0}, "expected_batch must be between"),
        ({"n_records": 10}, "exactly one of target_epsilon and noise_multiplier"),
        ({"n_records": 10, "noise_multiplier": 1.0, "target_epsilon": 1.0}, "exactly one of"),
        ({"n_records": 10, "target_epsilon": -1.0}, "target_epsilon must be a positive number"),
        ({"n_records": 10, "noise_multiplier": 0.0}, "noise_multiplier must be a positive number"),
        ({"n_records": 10, "noise_multiplier": 1.0, "epochs": 0.0}, "epochs must be a positive number"),
        ({"n_records": 10, "noise_multiplier": 1.0, "max_grad_norm": -1.0}, "max_grad_norm must be a positive"),
        ({"n_records": 10, "noise_multiplier": 1.0, "delta": 1.0}, "delta must lie strictly between 0 and 1"),
        ({"n_records": 10, "target_epsilon": 1e-9, "delta": 1e-10}, "no noise multiplier reaches epsilon"),
    ],
)
def test_bad_plans_are_refused_with_a_sentence(kwargs: dict[str, float], message: str) -> None:
    arguments: dict[str, float] = {"delta": 1e-5, **kwargs}
    n_records = int(arguments.pop("n_records"))
    with pytest.raises(ValueError, match=message):
        plan_dp_sgd(n_records, **arguments)  # type: ignore[arg-type]


def test_a_plan_built_by_hand_is_checked_too() -> None:
    with pytest.raises(ValueError, match="sample_rate is a probability"):
        DpSgdPlan(noise_multiplier=1.0, sample_rate=1.5, steps=10, max_grad_norm=1.0, delta=1e-5)
    with pytest.raises(ValueError, match="at least one step"):
        DpSgdPlan(noise_multiplier=1.0, sample_rate=0.5, steps=0, max_grad_norm=1.0, delta=1e-5)
    plan = DpSgdPlan(noise_multiplier=1.0, sample_rate=0.5, steps=1, max_grad_norm=1.0, delta=1e-5)
    with pytest.raises(ValueError, match="at least 2 private examples"):
        dp_finetune(tiny_host(), RECORDS[:1], plan)


def test_an_examples_loss_does_not_depend_on_the_records_sampled_beside_it() -> None:
    host = tiny_host()
    short, longer = RECORDS[0], TrainingExample("Q: (12 + 30) - 7 =\nAnswer: ", "(1) 12 + 30 = 42. 42 - 7 = 35")

    def losses(examples: list[TrainingExample]) -> torch.Tensor:
        batch = encode_batch(host.tokenizer, examples, host.max_positions, host.device)
        with torch.no_grad():
            logits = host.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            return per_example_loss(logits, batch.labels, batch.weights)

    alone = losses([short])
    assert losses([short, longer])[0] == pytest.approx(float(alone[0]), abs=1e-5)
    assert losses([short, short])[0] == pytest.approx(float(alone[0]), abs=1e-5)
    batch = encode_batch(host.tokenizer, [short], host.max_positions, host.device)
    with torch.no_grad():
        reference = weighted_lm_loss(host.model(input_ids=batch.input_ids).logits, batch.labels, batch.weights)
    assert float(alone[0]) == pytest.approx(float(reference), abs=1e-5)


def test_dp_finetune_learns_counts_every_step_and_returns_a_plain_model() -> None:
    host = tiny_host()
    model = host.model
    hooks_before = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    examples = RECORDS[:2] * 15
    # q = 8/30 is not 1/k: Opacus's make_private alone would sample (and account) at q = 1/3 instead.
    plan = plan_dp_sgd(len(examples), noise_multiplier=1.0, delta=1e-5, expected_batch=8, epochs=10)
    assert plan.steps == 38
    seen: list[tuple[int, int, float]] = []
    result = dp_finetune(host, examples, plan, lr=3e-2, progress=lambda *row: seen.append(row))

    assert len(result.losses) == plan.steps == len(seen)
    assert [row[:2] for row in seen] == [(i, plan.steps) for i in range(1, plan.steps + 1)]
    assert result.epsilon == pytest.approx(plan.epsilon, rel=1e-6)
    first, last = result.losses[:5], result.losses[-5:]
    assert sum(last) / 5 < 0.5 * sum(first) / 5, result.losses

    # The same module, unwrapped, without hooks or Opacus's attributes, in eval mode.
    assert host.model is model and type(host.model).__name__ == "LlamaForCausalLM"
    assert not host.model.training
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == hooks_before
    assert not any(hasattr(m, "autograd_grad_sample_hooks") or hasattr(m, "activations") for m in model.modules())
    assert not any(hasattr(p, a) for p in model.parameters() for a in OPACUS_ATTRIBUTES)
    assert all(p.grad is None for p in model.parameters())

    generated = host.generate_sync([RECORDS[0].prompt], [SamplingParams(max_new_tokens=3)])
    assert isinstance(generated[0].text, str) and generated[0].token_ids
    score = host.score_sync([RECORDS[0].prompt], ["5"])[0]
    assert math.isfinite(score.mean) and score.tokens
    dp = host.metadata.extra["dp_sgd"]
    assert dp == pytest.approx({**plan.as_dict(), "epsilon": result.epsilon})
    assert host.metadata.train_steps == plan.steps


def test_empty_poisson_batches_are_noise_only_steps_and_runs_repeat() -> None:
    host = tiny_host()
    # One expected record per step out of 12: about a third of the batches come out empty.
    plan = plan_dp_sgd(12, noise_multiplier=2.0, delta=1e-5, expected_batch=1, epochs=1.5)
    weight = host.model.lm_head.weight
    snapshots: list[torch.Tensor] = []

    def record(step: int, steps: int, loss: float) -> None:
        snapshots.append(weight.detach().clone())

    before = weight.detach().clone()
    result = dp_finetune(host, RECORDS * 4, plan, seed=3, progress=record)
    empty = [i for i, loss in enumerate(result.losses) if math.isnan(loss)]
    assert len(result.losses) == plan.steps == 18 and empty
    assert result.epsilon == pytest.approx(plan.epsilon, rel=1e-6)
    for i in empty:  # an empty batch still moves the weights (noise) and still counts
        assert not torch.equal(snapshots[i], snapshots[i - 1] if i else before)

    # The hooks come off cleanly, so the same host trains again; and the same seed, the same run.
    again = dp_finetune(host, RECORDS * 4, plan, seed=3)
    assert len(again.losses) == plan.steps and host.metadata.train_steps == 2 * plan.steps
    twin = dp_finetune(tiny_host(), RECORDS * 4, plan, seed=3)
    assert twin.losses == pytest.approx(result.losses, nan_ok=True)
