"""A small PPO for language-model samples, as TnD uses it (Ma, Wang, Chai 2024; trl 0.7.1 settings).

A sample is a prompt and a response (a student's trial or a teacher's demonstration). Its one
scalar reward is put on the response's last token; there is no KL penalty (coefficient 0). Then:

  values      V(s_t): a linear value head on the policy's last hidden state before token t
  advantages  GAE with gamma = 1 and lambda = 0.95:
                delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = sum_l (gamma lambda)^l delta_{t+l}
              returns R_t = A_t + V(s_t); advantages whitened over all response tokens of the batch
  policy      ratio = exp(log pi(y_t) - log pi_old(y_t));
              loss_pg = mean max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))
  value       V_clip = V_old + clip(V - V_old, -eps_v, eps_v);
              loss_v = 1/2 mean max((V - R)^2, (V_clip - R)^2)
  total       loss_pg + vf_coef loss_v, one optimizer step per minibatch

"old" is the policy and value head before the interactive step's update; advantages are computed
and whitened over the whole batch, then one epoch of minibatches follows (trl: ppo_epochs 1,
mini_batch_size 16), so the first minibatch has ratio = 1 and later ones are clipped against the
policy that sampled. Everything here is plain functions over tensors, so each piece can be
checked on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from node.llm.tokenizer import encode


class ValueHead(torch.nn.Module):
    """V(s): one linear layer on the policy's hidden state (trl's value head, without dropout)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.summary.bias)
        torch.nn.init.normal_(self.summary.weight, std=0.02)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        values: torch.Tensor = self.summary(hidden.float()).squeeze(-1)
        return values


@dataclass(frozen=True)
class ResponseBatch:
    """Prompt + response token ids, right-padded; `mask` marks response tokens (what PPO learns)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L], contiguous (Opacus-safe)
    response_mask: torch.Tensor  # [B, L-1] float: 1 where token t+1 is a response token
    targets: torch.Tensor  # [B, L-1]: the token predicted at each position

    def rows(self, index: torch.Tensor) -> ResponseBatch:
        """The samples at `index` (a PPO minibatch), padded as in the whole batch."""
        return ResponseBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.position_ids[index],
            self.response_mask[index],
            self.targets[index],
        )


def encode_responses(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    device: torch.device,
) -> ResponseBatch:
    """Tokenize prompt and response apart (the response's tokens are what the policy chose); an
    empty response is the EOS token alone, so every sample has a last token to reward."""
    rows: list[tuple[list[int], int]] = []
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    for prompt, response in zip(prompts, responses, strict=True):
        prompt_ids = encode(tokenizer, prompt)
        response_ids = encode(tokenizer, response, add_bos=False) or [eos]
        ids = (prompt_ids + response_ids)[:max_length]
        rows.append((ids, min(len(prompt_ids), len(ids) - 1)))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width - 1))
    for row, (ids, prompt_length) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        response_mask[row, prompt_length - 1 : len(ids) - 1] = 1.0  # positions predicting response tokens
    return ResponseBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=torch.arange(width, device=device).repeat(len(rows), 1),
        response_mask=response_mask.to(device),
        targets=input_ids[:, 1:].to(device),
    )


def policy_forward(
    model: PreTrainedModel, value_head: ValueHead, batch: ResponseBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log pi(token) at every position and V(state) there, both [B, L-1] (gradients kept)."""
    output = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        output_hidden_states=True,
    )
    logits = output.logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    values = value_head(output.hidden_states[-1][:, :-1])
    return logprobs, values


def last_token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: each sample's score on its last response token, 0 elsewhere."""
    rewards = torch.zeros_like(mask)
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values
    rewards[torch.arange(mask.size(0), device=mask.device), last] = scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns over the masked (response) positions."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.size(0), device=rewards.device)
    next_value = torch.zeros(rewards.size(0), device=rewards.device)
    for t in reversed(range(rewards.size(1))):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(m > 0, delta + gamma * lam * running, running)
        advantages[:, t] = running * m
        next_value = torch.where(m > 0, values[:, t], next_value)
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (trl's masked_whiten, mean shifted)."""
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    return (values - mean) * torch.rsqrt(variance + eps) * mask


@dataclass(frozen=True)
class PPOLosses:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    clip_fraction: float


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    value_clip: float = 0.2,
    vf_coef: float = 0.1,
) -> PPOLosses:
    """The clipped policy objective plus the clipped value loss, averaged over response tokens."""
    count = mask.sum().clamp(min=1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    policy = (torch.max(unclipped, clipped) * mask).sum() / count
    values_clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    value_error = torch.max((values - returns) ** 2, (values_clipped - returns) ** 2)
    value = 0.5 * (value_error * mask).sum() / count
    clip_fraction = float((((ratio - 1.0).abs() > clip).float() * mask).sum() / count)
    return PPOLosses(policy + vf_coef * value, policy, value, clip_fraction)
