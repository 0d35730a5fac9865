"""Getting a model: build a tiny one from a spec, or load any Hugging Face causal LM.

Tiny models are Llama- or GPT-2-family configs with untied input/output embeddings (Opacus's
ghost clipping needs them untied). Pretrained models load from a local directory or a hub id;
with ``HF_HUB_OFFLINE=1`` only the local cache is consulted, and a missing model is one clear
error naming the path or id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from node.llm.placement import Placement

Family = Literal["llama", "gpt2"]


class ModelLoadError(Exception):
    """A model that cannot be loaded or built; the message names the path or hub id."""


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny model built from scratch (defaults: ~0.8M parameters, sized for 2 CPU cores)."""

    family: Family = "llama"
    layers: int = 4
    dim: int = 128
    heads: int = 4
    max_positions: int = 2048  # longest prompt + continuation, in tokens (word sorting runs long)

    def __post_init__(self) -> None:
        if self.family not in ("llama", "gpt2"):
            raise ModelLoadError(f"unknown model family {self.family!r}; use llama or gpt2")
        if min(self.layers, self.dim, self.heads, self.max_positions) < 1:
            raise ModelLoadError("layers, dim, heads and max_positions must all be positive")
        if self.dim % self.heads:
            raise ModelLoadError(f"heads ({self.heads}) must divide dim ({self.dim})")


def build_tiny_model(spec: TinySpec, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM of the spec's family, sized to the tokenizer's vocabulary."""
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(seed)
    model: PreTrainedModel
    if spec.family == "llama":
        # SwiGLU with 8/3 * dim hidden units has the parameter count of a 4 * dim GELU MLP.
        intermediate = max(16, round(8 * spec.dim / 3 / 16) * 16)
        llama = LlamaConfig(
            hidden_size=spec.dim,
            intermediate_size=intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.max_positions,
            **special,
        )
        model = LlamaForCausalLM(llama)
    else:
        gpt2 = GPT2Config(
            n_embd=spec.dim, n_layer=spec.layers, n_head=spec.heads, n_positions=spec.max_positions, **special
        )
        model = GPT2LMHeadModel(gpt2)
    return model


def _is_local_path(source: str) -> bool:
    # Hub ids are NAME or OWNER/NAME; anything else that does not exist is a missing directory.
    return source.startswith(("/", ".", "~")) or source.count("/") > 1


def load_pretrained(
    source: str, placement: Placement, revision: str = "main"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a local directory or a hub id, placed on the device."""
    path = Path(source).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
        target, where = str(path), f"directory {path}"
    elif _is_local_path(source):
        raise ModelLoadError(f"no model directory at {path}")
    else:
        target, where = source, f"hub id {source!r}" + (" (HF_HUB_OFFLINE=1: local cache only)" if offline else "")
    options: dict[str, object] = {"revision": revision, "local_files_only": offline}
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, **options)
        model = AutoModelForCausalLM.from_pretrained(
            target,
            dtype=placement.dtype,
            device_map=placement.device_map or {"": placement.device},
            **options,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the model from {where}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        # Batched generation pads; models shipped without a pad token reuse EOS for it.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer
