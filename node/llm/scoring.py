"""Scoring: per-token log-probabilities of given continuations after given contexts.

Rewards, perplexity-based top-k, voting between teachers and the Secret Sharer audit all ask
the same question: how likely is this text after that one? Context and continuation are
tokenized separately and concatenated, so the continuation's tokens are the same whatever
precedes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from node.llm.tokenizer import encode


@dataclass(frozen=True)
class ContinuationScore:
    """Log-probabilities (natural log) of each continuation token given everything before it."""

    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]

    @property
    def total(self) -> float:
        return math.fsum(self.logprobs)

    @property
    def mean(self) -> float:
        """Length-normalised log-likelihood (0 for an empty continuation)."""
        return self.total / len(self.logprobs) if self.logprobs else 0.0

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean)


@torch.inference_mode()
def score_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Sequence[str],
    device: torch.device,
) -> list[ContinuationScore]:
    """Score each continuation after its context, in one right-padded forward pass."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if not contexts:
        return []
    rows = []
    for context, continuation in zip(contexts, continuations, strict=True):
        head = encode(tokenizer, context)  # starts with BOS, so the first continuation token has a context
        tail = encode(tokenizer, continuation, add_bos=False)
        if not head:
            raise ValueError("this tokenizer has no BOS token, so a continuation needs a non-empty context")
        rows.append((head, tail))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(head) + len(tail) for head, tail in rows)
    ids = torch.tensor([head + tail + [pad] * (width - len(head) - len(tail)) for head, tail in rows], device=device)
    mask = torch.tensor([[1] * (len(h) + len(t)) + [0] * (width - len(h) - len(t)) for h, t in rows], device=device)
    positions = torch.arange(width, device=device).repeat(len(rows), 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()
    scores = []
    for row, (head, tail) in enumerate(rows):
        # Token i of the sequence is predicted at position i - 1.
        values = logprobs[row, len(head) - 1 : len(head) - 1 + len(tail)].tolist()
        scores.append(ContinuationScore(tuple(tokenizer.convert_ids_to_tokens(tail)), tuple(values)))
    return scores
