"""ModelHost: one causal LM a node can load, run, score with, train and save.

Generation and scoring run on one worker thread, never on the event loop, so health checks
and other RPCs are served while the model works; concurrent `generate` calls are batched. A
lock makes generation, scoring and training take turns on the same weights.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from node import __version__
from node.llm.batcher import GenerationBatcher
from node.llm.checkpoint import ModelMetadata, read_metadata, recover_checkpoint, save_checkpoint
from node.llm.loading import TinySpec, build_tiny_model, load_pretrained
from node.llm.placement import Placement, resolve_placement
from node.llm.sampling import Generation, SamplingParams, generate_batch
from node.llm.scoring import ContinuationScore, score_batch
from node.llm.tokenizer import encode, train_tokenizer
from node.llm.training import TrainingExample, encode_batch, weighted_lm_loss
from node.tasks.base import INTERACTION_TEXTS

if TYPE_CHECKING:
    from node.config import ModelSection
    from node.tasks.base import Task

P = ParamSpec("P")
R = TypeVar("R")


class ModelHost:
    """A model and its tokenizer on a device, with batched generation off the event loop."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        placement: Placement,
        metadata: ModelMetadata,
        *,
        batch_window_s: float = 0.005,
        max_batch_size: int = 16,
        on_generated: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model.train(False)  # inference mode (no dropout) unless a train step is running
        self.tokenizer = tokenizer
        self.placement = placement
        self.metadata = metadata
        self.origin = metadata.source  # where it came from: "tiny", a directory or a hub id
        self.on_generated = on_generated  # called with the number of tokens each batch generated
        self._lock = threading.RLock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agora-model")
        self._batcher = GenerationBatcher(self.generate_sync, self._executor, batch_window_s, max_batch_size)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, task: Task, spec: TinySpec | None = None, placement: Placement | None = None, seed: int = 0) -> Self:
        """A random-init tiny model with a tokenizer trained on the task's corpus."""
        placement = placement or resolve_placement("cpu", "float32")
        spec = spec or TinySpec()
        tokenizer = train_tokenizer([*task.corpus(seed), *INTERACTION_TEXTS], task.tokenizer_level)
        model = build_tiny_model(spec, tokenizer, seed)
        torch.nn.Module.to(model, device=placement.device, dtype=placement.dtype)
        metadata = ModelMetadata(
            task=task.name, tokenizer_level=task.tokenizer_level, source="tiny", agora_version=__version__
        )
        metadata.extra["spec"] = {"family": spec.family, "layers": spec.layers, "dim": spec.dim, "heads": spec.heads}
        return cls(model, tokenizer, placement, metadata)

    @classmethod
    def load(cls, source: str | Path, placement: Placement | None = None, revision: str = "main") -> Self:
        """A model from a local directory (an Agora checkpoint or any HF model) or a hub id."""
        placement = placement or resolve_placement()
        path = Path(source).expanduser()
        if path.name:
            recover_checkpoint(path)
        model, tokenizer = load_pretrained(str(source), placement, revision)
        metadata = read_metadata(path) if path.is_dir() else ModelMetadata(source=str(source))
        host = cls(model, tokenizer, placement, metadata)
        host.origin = str(path.resolve()) if path.is_dir() else str(source)
        return host

    @classmethod
    def from_settings(cls, section: ModelSection, task: Task) -> Self:
        """The model a node's `model` settings describe (`tiny` builds one for the task)."""
        placement = resolve_placement(section.device, section.dtype)
        if section.source == "tiny":
            spec = TinySpec(section.family, section.layers, section.dim, section.heads)
            host = cls.build(task, spec, placement)
        else:
            host = cls.load(section.source, placement, section.revision)
        host._batcher.window_s = section.batch_window_ms / 1000
        host._batcher.max_batch_size = section.max_batch_size
        return host

    # -- facts ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def model_id(self) -> str:
        """What peers see as the model: the directory name or hub id (or "tiny")."""
        return Path(self.origin).name if Path(self.origin).is_absolute() else self.origin

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def max_positions(self) -> int:
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return int(limit) if limit else 2048

    @property
    def batcher(self) -> GenerationBatcher:
        return self._batcher

    # -- generation and scoring ----------------------------------------------------------------

    def check_prompts(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> None:
        """ValueError naming the first prompt that cannot fit the model's context."""
        for index, (prompt, row) in enumerate(zip(prompts, params, strict=True)):
            length = len(encode(self.tokenizer, prompt))
            if length + row.max_new_tokens > self.max_positions:
                raise ValueError(
                    f"prompt {index} has {length} tokens; with max_new_tokens {row.max_new_tokens} it exceeds "
                    f"the model's context of {self.max_positions} tokens"
                )

    def generate_sync(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Generation]:
        """Generate in the calling thread (blocking); waits for any other model work first."""
        with self._lock:
            self.model.train(False)
            results = generate_batch(self.model, self.tokenizer, prompts, params, self.device)
        if self.on_generated is not None:
            self.on_generated(sum(len(r.token_ids) for r in results))
        return results

    async def generate(
        self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Generation]:
        """Generate off the event loop, batched with other concurrent callers."""
        if params is None or isinstance(params, SamplingParams):
            rows = [params or SamplingParams()] * len(prompts)
        else:
            rows = list(params)
        self.check_prompts(prompts, rows)  # a bad request fails alone, not the batch it would join
        return await self._batcher.submit(prompts, rows)

    def score_sync(
        self, contexts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
    ) -> list[ContinuationScore]:
        """Per-token log-probabilities of each continuation after its context (blocking)."""
        scores: list[ContinuationScore] = []
        with self._lock:
            self.model.train(False)
            for start in range(0, len(contexts), batch_size):
                end = start + batch_size
                scores += score_batch(
                    self.model, self.tokenizer, contexts[start:end], continuations[start:end], self.device
                )
        return scores

    async def score(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[ContinuationScore]:
        return await self.run(self.score_sync, contexts, continuations)

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run any model work on the model's worker thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- training ------------------------------------------------------------------------------

    def make_optimizer(self, lr: float = 1e-3, weight_decay: float = 0.01) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)

    def forward_loss(self, examples: Sequence[TrainingExample]) -> torch.Tensor:
        """The weighted LM loss of examples, with gradients (the caller owns backward and the step)."""
        batch = encode_batch(self.tokenizer, examples, self.max_positions, self.device)
        logits = self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
        return weighted_lm_loss(logits, batch.labels, batch.weights)

    def train_step(
        self, examples: Sequence[TrainingExample], optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0
    ) -> float:
        """One optimizer step on examples; returns the loss before the step."""
        with self._lock:
            self.model.train()
            loss = self.forward_loss(examples)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
            optimizer.step()
            self.model.train(False)
            self.metadata.train_steps += 1
            return float(loss.detach())

    @torch.no_grad()
    def eval_loss(self, examples: Sequence[TrainingExample], batch_size: int = 16) -> float:
        """Mean weighted loss over examples, without gradients (held-out loss)."""
        with self._lock:
            self.model.train(False)
            losses = [
                float(self.forward_loss(examples[i : i + batch_size])) for i in range(0, len(examples), batch_size)
            ]
        return sum(losses) / len(losses) if losses else float("nan")

    # -- persistence ---------------------------------------------------------------------------

    def save(self, out_dir: Path, **extra: object) -> Path:
        """Write an atomic checkpoint (weights, tokenizer, metadata with `extra` merged in)."""
        with self._lock:
            metadata = replace(self.metadata, agora_version=__version__, extra={**self.metadata.extra, **extra})
            return save_checkpoint(self.model, self.tokenizer, out_dir, metadata)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
