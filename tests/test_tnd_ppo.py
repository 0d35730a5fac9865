"""TnD's PPO pieces on their own: rewards on the last token, GAE (gamma 1, lambda 0.95), whitening,
the clipped policy objective and the clipped value loss, and which tokens count as the response."""

from __future__ import annotations

import torch

from node.llm.host import ModelHost
from node.llm.loading import TinySpec
from node.tasks import get_task
from student import ppo


def _reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """The textbook recursion over one response, written independently of student.ppo."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_matches_the_recursion_by_hand_and_on_padded_rows() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.1]])
    advantages, returns = ppo.gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # delta_2 = 1 - 0.1; A_1 = (0.1 - 0.2) + 0.95 A_2; A_0 = (0.2 - 0.5) + 0.95 A_1
    assert torch.allclose(advantages, torch.tensor([[0.41725, 0.755, 0.9]]))
    assert torch.allclose(returns, advantages + values)

    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 9)
    spans = [(2, 7), (0, 9), (4, 5)]  # response positions of each row; the rest is prompt or padding
    for row, (start, end) in enumerate(spans):
        mask[row, start:end] = 1
    values = torch.randn(3, 9, generator=generator)
    scores = torch.randn(3, generator=generator)
    rewards = ppo.last_token_rewards(scores, mask)
    advantages, _ = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    for row, (start, end) in enumerate(spans):
        assert rewards[row].nonzero().flatten().tolist() == [end - 1]  # the score sits on the last token
        expected = _reference_gae(rewards[row, start:end].tolist(), values[row, start:end].tolist(), 1.0, 0.95)
        assert torch.allclose(advantages[row, start:end], torch.tensor(expected), atol=1e-6)
        assert advantages[row, :start].abs().sum() == 0 and advantages[row, end:].abs().sum() == 0


def test_whitening_is_over_response_tokens_only() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    whitened = ppo.whiten(values, mask)
    kept = whitened[mask > 0]
    assert abs(float(kept.mean())) < 1e-6
    assert abs(float(kept.std()) - 1.0) < 1e-4  # unbiased, as trl's masked_whiten
    assert whitened[mask == 0].abs().sum() == 0


def test_the_policy_gradient_is_clipped_outside_the_trust_region() -> None:
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    old = torch.zeros(1, 4)
    # ratios 1.5 (above 1 + 0.2), 1.1 (inside), 0.5 (below 1 - 0.2), 1.1 (inside)
    logprobs = torch.log(torch.tensor([[1.5, 1.1, 0.5, 1.1]])).requires_grad_()
    values = torch.zeros(1, 4, requires_grad=True)
    losses = ppo.ppo_loss(logprobs, old, values, torch.zeros(1, 4), advantages, torch.zeros(1, 4), torch.ones(1, 4))
    losses.policy.backward()  # type: ignore[no-untyped-call]
    assert logprobs.grad is not None
    gradient = logprobs.grad[0].tolist()
    # Clipped on the side that would overshoot: no gradient for tokens 0 and 2.
    assert gradient[0] == 0.0 and gradient[2] == 0.0
    assert abs(gradient[1] - (-1.0 * 1.1 / 4)) < 1e-6 and abs(gradient[3] - (1.0 * 1.1 / 4)) < 1e-6
    assert losses.clip_fraction == 0.5


def test_the_value_loss_takes_the_larger_of_clipped_and_unclipped_errors() -> None:
    old_values = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])  # the first moved past the 0.2 clip, the second did not
    returns = torch.tensor([[2.0, 1.0]])
    mask = torch.ones(1, 2)
    zeros = torch.zeros(1, 2)
    losses = ppo.ppo_loss(zeros, zeros, values, old_values, zeros, returns, mask, value_clip=0.2, vf_coef=0.1)
    # token 0: max((1 - 2)^2, (0.2 - 2)^2) = 3.24; token 1: (0.1 - 1)^2 = 0.81 either way
    assert torch.isclose(losses.value, torch.tensor(0.5 * (3.24 + 0.81) / 2))
    assert torch.isclose(losses.total, losses.policy + 0.1 * losses.value)


def test_the_response_mask_covers_exactly_the_response_tokens() -> None:
    host = ModelHost.build(get_task("word_learning"), TinySpec(layers=1, dim=32, heads=2))
    prompts = ["look at the", "the big dog is"]
    responses = ["big dog !", ""]  # an empty response is EOS alone
    batch = ppo.encode_responses(host.tokenizer, prompts, responses, host.max_positions, host.device)
    assert batch.response_mask.sum(dim=1).tolist() == [3.0, 1.0]  # word-level: three words; EOS
    row = batch.response_mask[0].nonzero().flatten().tolist()
    predicted = batch.targets[0, row].tolist()
    assert host.tokenizer.decode(predicted) == "big dog !"
    assert batch.targets[1, batch.response_mask[1] > 0].tolist() == [host.tokenizer.eos_token_id]
    head = ppo.ValueHead(int(host.model.config.hidden_size))
    logprobs, values = ppo.policy_forward(host.model, head, batch)
    assert logprobs.shape == values.shape == batch.response_mask.shape
    assert bool((logprobs <= 0).all())
