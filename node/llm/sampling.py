"""Batched generation: one decoding loop over left-padded prompts with per-row sampling.

Every row has its own temperature, top-k, top-p, stop strings, token limit and seed, so requests
from different callers can share one batch and still get exactly what they would get alone.
The loop keeps the model's KV cache and feeds position ids computed from the attention mask, so
left padding does not shift positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from node.llm.tokenizer import encode

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # keep only the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set of tokens with this much probability; 1 = off
    stop: tuple[str, ...] = ()  # generation ends at the first of these; it is not part of the text
    seed: int | None = None  # same seed, same prompt, same params: same text

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass(frozen=True)
class Generation:
    """One continuation."""

    text: str  # the continuation, without the prompt and without the stop string or EOS
    token_ids: tuple[int, ...]  # tokens generated (up to and including a stop or EOS)
    finish_reason: FinishReason
    prompt_tokens: int


def _choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Next token for one row: greedy, or sampled after temperature, top-k and top-p."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        # Drop a token when the tokens before it already hold top_p; the first always stays.
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scores, dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


@torch.inference_mode()
def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: Sequence[SamplingParams],
    device: torch.device,
) -> list[Generation]:
    """Continue every prompt with its own params, all in one batch."""
    if len(prompts) != len(params):
        raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
    if not prompts:
        return []
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    encoded = [encode(tokenizer, prompt) for prompt in prompts]
    for ids, options in zip(encoded, params, strict=True):
        if limit and len(ids) + options.max_new_tokens > limit:
            raise ValueError(
                f"prompt of {len(ids)} tokens + max_new_tokens {options.max_new_tokens} exceeds the model's "
                f"context of {limit} tokens"
            )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
    eos = tokenizer.eos_token_id

    generated: list[list[int]] = [[] for _ in prompts]
    finished: list[FinishReason | None] = [None] * len(prompts)
    texts = [""] * len(prompts)
    past = None
    step_ids = input_ids
    for _ in range(max(p.max_new_tokens for p in params)):
        # `cache` is transformers 5.24's name; `past_key_values` is deprecated (removed in 5.40).
        out = model(input_ids=step_ids, attention_mask=attention, position_ids=positions, cache=past, use_cache=True)
        past = out.cache
        logits = out.logits[:, -1, :]
        next_ids = []
        for row, row_params in enumerate(params):
            if finished[row] is not None:
                next_ids.append(pad)
                continue
            token = _choose(logits[row], row_params, generators[row])
            next_ids.append(token)
            generated[row].append(token)
            if token == eos:
                finished[row] = "eos"
                continue
            texts[row] = str(tokenizer.decode(generated[row], skip_special_tokens=True))
            cut = _stop_at(texts[row], row_params.stop)
            if cut is not None:
                texts[row], finished[row] = texts[row][:cut], "stop"
            elif len(generated[row]) >= row_params.max_new_tokens:
                finished[row] = "length"
        if all(reason is not None for reason in finished):
            break
        step_ids = torch.tensor(next_ids, device=device)[:, None]
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return [
        Generation(texts[row], tuple(generated[row]), finished[row] or "length", len(encoded[row]))
        for row in range(len(prompts))
    ]
