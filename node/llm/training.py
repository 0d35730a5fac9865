"""Training hooks: turn (prompt, target) pairs into a weighted next-token loss.

Only target tokens are learned (the prompt is context). A target may be given as segments with
weights, e.g. TriPosT's weight 1.5 on every token from "Feedback:" on; a segment of weight 0 is
context too (YODA's wrong answers). The loss is the mean of weight x cross-entropy over target
tokens, so a weight above 1 really counts for more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from node.llm.tokenizer import encode

IGNORE = -100  # label of tokens that are not learned (prompt and padding)
Segments = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class TrainingExample:
    """One supervised example: learn `target` after `prompt`."""

    prompt: str
    target: str | Segments  # text (weight 1), or (text, weight) segments in order
    append_eos: bool = True  # learn to stop after the target

    def segments(self) -> Segments:
        return [(self.target, 1.0)] if isinstance(self.target, str) else self.target


def clm_example(text: str) -> TrainingExample:
    """Causal LM on a whole text: an empty prompt (BOS only), then the text and EOS are learned."""
    return TrainingExample(prompt="", target=text)


@dataclass(frozen=True)
class TrainingBatch:
    """Right-padded tensors for one forward pass; `weights` is 0 wherever `labels` is IGNORE."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor  # contiguous [B, T] (Opacus on GPT-2 needs them materialised)
    labels: torch.Tensor
    weights: torch.Tensor
    truncated: int  # examples cut to max_length

    @property
    def target_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def encode_batch(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TrainingExample],
    max_length: int,
    device: torch.device,
) -> TrainingBatch:
    """Tokenize, mask the prompt out of the labels, weight the targets, pad on the right."""
    if not examples:
        raise ValueError("a training batch needs at least one example")
    rows: list[tuple[list[int], list[int], list[float]]] = []
    truncated = 0
    for example in examples:
        ids = encode(tokenizer, example.prompt)
        labels = [IGNORE] * len(ids)
        weights = [0.0] * len(ids)
        for text, weight in example.segments():
            piece = encode(tokenizer, text, add_bos=False)
            ids += piece
            # Weight 0 is context, not target: neither learned nor counted in the mean.
            labels += piece if weight > 0 else [IGNORE] * len(piece)
            weights += [weight] * len(piece)
        if example.append_eos and tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
            weights.append(weights[-1] if weights and weights[-1] else 1.0)
        if len(ids) > max_length:
            truncated += 1
            ids, labels, weights = ids[:max_length], labels[:max_length], weights[:max_length]
        rows.append((ids, labels, weights))
    width = max(len(ids) for ids, _, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def padded(values: Sequence[Sequence[float]], fill: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([[*v, *([fill] * (width - len(v)))] for v in values], dtype=dtype, device=device)

    return TrainingBatch(
        input_ids=padded([r[0] for r in rows], pad, torch.long),
        attention_mask=padded([[1] * len(r[0]) for r in rows], 0, torch.long),
        position_ids=torch.arange(width, device=device).repeat(len(rows), 1),
        labels=padded([r[1] for r in rows], IGNORE, torch.long),
        weights=padded([r[2] for r in rows], 0.0, torch.float),
        truncated=truncated,
    )


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over target tokens of weight x next-token cross-entropy."""
    shifted_logits = logits[:, :-1].float()
    shifted_labels, shifted_weights = labels[:, 1:], weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view_as(shifted_labels)
    counted = (shifted_labels != IGNORE).sum().clamp(min=1)
    return (losses * shifted_weights).sum() / counted
