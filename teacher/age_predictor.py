"""TnD's age predictor R_phi: how far along in training was the model that wrote this text?

Data: short contexts (the first few words of held-out corpus sentences, unique) are continued by
every log-spaced teacher checkpoint (teacher/tnd_teacher.py), a few samples each with a fixed seed,
in batches; each text "context continuation" is labelled y = log2(step of its checkpoint).
Contexts are split into train and held-out sets *by context*, so no context of the held-out set
was ever seen in training, whichever checkpoint continued it.

Model: a tiny Llama with a scalar regression head (LlamaForSequenceClassification, num_labels=1)
over the teacher's own tokenizer, reading the hidden state of an EOS token appended to the text.
Trained by MSE on standardised labels with AdamW (warm-up + cosine); scores come back in
log2-step units. Quality is the held-out Pearson r between scores and labels.

On disk (one directory, written atomically): config.json + model.safetensors (`save_pretrained`),
the tokenizer files, and age_predictor.json (r, label mean/std/range, checkpoint steps, settings).
A teacher node with `teacher.age_predictor` set serves it as Score SCORE_KIND_AGE.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerBase

from node.llm.host import ModelHost
from node.llm.placement import resolve_placement
from node.llm.sampling import SamplingParams
from node.llm.schedule import LRSchedule
from node.llm.sft import shuffled_batches
from node.llm.tokenizer import encode
from node.tasks.word_learning import WordLearningTask
from teacher.tnd_teacher import teacher_checkpoints

INFO_FILE = "age_predictor.json"
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class AgePredictorError(ValueError):
    """An age predictor directory that cannot be loaded; the message names it and says why."""


def age_text(question: str, text: str) -> str:
    """What R_phi reads: a prompt and its continuation, joined by a space (the Score request's item)."""
    return f"{question} {text}".strip()


@dataclass(frozen=True)
class AgePredictorConfig:
    contexts: int = 200  # distinct contexts, each continued by every checkpoint
    samples: int = 4  # continuations per context per checkpoint
    context_words: tuple[int, int] = (2, 5)  # a context is the first k words of a sentence, low <= k <= high
    max_new_tokens: int = 24  # tokens per continuation: TnD's trials and demonstrations (student.tnd_max_new_tokens)
    top_k: int = 20  # sampled as TnD's trials and demonstrations are, the texts R_phi will score
    top_p: float = 0.95
    held_out: float = 0.2  # share of contexts held out for the Pearson r
    layers: int = 2  # the regressor: a tiny Llama of this many layers,
    dim: int = 64  # this hidden size
    heads: int = 4  # and this many attention heads
    steps: int = 600  # regression optimizer steps (AdamW, warm-up then cosine decay)
    batch_size: int = 32  # texts per step
    lr: float = 1e-3  # peak learning rate
    generation_batch: int = 64  # prompts per generate call
    seed: int = 0  # contexts, split, sampling and initial weights
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps (always float32)

    def __post_init__(self) -> None:
        low, high = self.context_words
        if not 1 <= low <= high:
            raise ValueError(f"context_words must be (low, high) with 1 <= low <= high, got {self.context_words}")
        for name in ("contexts", "samples", "max_new_tokens", "steps", "batch_size", "generation_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.contexts < 2 or not 0 < self.held_out < 1:
            raise ValueError("the predictor needs at least 2 contexts and a held-out share strictly between 0 and 1")


@dataclass(frozen=True)
class AgeSample:
    text: str
    step: int
    label: float  # log2(step)
    context: int  # index of its context: the unit of the train / held-out split
    held_out: bool


@dataclass
class AgePredictorReport:
    out: Path
    pearson_r: float
    n_held_out: int  # held-out texts
    n_train: int
    steps: list[int]  # checkpoint steps the texts came from
    mse: float  # held-out mean squared error, in log2-step units
    mean_score: dict[int, float]  # checkpoint step -> mean held-out score of its texts (should rise with step)


def draw_contexts(n: int, context_words: tuple[int, int], seed: int) -> list[str]:
    """Up to n distinct contexts: the first k words of held-out (seen split) corpus sentences."""
    rng = random.Random(f"tnd:contexts:{seed}")
    contexts: dict[str, None] = {}
    for sentence in WordLearningTask().sentences(4 * n, seed, split="seen"):
        words = sentence.split()
        k = rng.randint(context_words[0], max(context_words[0], min(context_words[1], len(words) - 1)))
        contexts[" ".join(words[:k])] = None
        if len(contexts) == n:
            break
    return list(contexts)


def build_dataset(
    checkpoints: Sequence[tuple[int, Path]], config: AgePredictorConfig, on_progress: Progress | None = None
) -> list[AgeSample]:
    """Every checkpoint continues every context `samples` times (batched); labels are log2(step)."""
    contexts = draw_contexts(config.contexts, config.context_words, config.seed)
    if len(contexts) < 2:
        raise ValueError(f"only {len(contexts)} distinct context could be drawn; the predictor needs two or more")
    n_held = min(len(contexts) - 1, max(1, round(config.held_out * len(contexts))))  # both sides keep a context
    held = set(random.Random(config.seed).sample(range(len(contexts)), n_held))
    rows = [(c, s) for c in range(len(contexts)) for s in range(config.samples)]
    params = [
        SamplingParams(config.max_new_tokens, 1.0, config.top_k, config.top_p, seed=config.seed * 1_000_003 + i)
        for i in range(len(rows))
    ]
    placement = resolve_placement(config.device, "float32")
    samples: list[AgeSample] = []
    for done, (step, path) in enumerate(checkpoints):
        host = ModelHost.load(path, placement)
        for start in range(0, len(rows), config.generation_batch):
            chunk = rows[start : start + config.generation_batch]
            outputs = host.generate_sync([contexts[c] for c, _ in chunk], params[start : start + len(chunk)])
            for (c, _), output in zip(chunk, outputs, strict=True):
                samples.append(AgeSample(age_text(contexts[c], output.text), step, math.log2(step), c, c in held))
        host.close()
        if on_progress is not None:
            on_progress("generate", done + 1, len(checkpoints))
    return samples


def _batch(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + text + EOS, right-padded: the head reads the EOS, whatever else shares the batch."""
    rows = [[*encode(tokenizer, text), tokenizer.eos_token_id] for text in texts]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device)
    return ids, mask


class AgePredictor:
    """R_phi loaded for scoring: texts in, predicted log2(step) out."""

    def __init__(
        self,
        model: LlamaForSequenceClassification,
        tokenizer: PreTrainedTokenizerBase,
        info: dict[str, Any],
        device: torch.device,
    ) -> None:
        self.model = torch.nn.Module.to(model, device=device).train(False)
        self.tokenizer, self.info, self.device = tokenizer, info, device
        self.mean, self.std = float(info["label_mean"]), float(info["label_std"])

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> AgePredictor:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise AgePredictorError(f"no age predictor directory at {path}")
        if not (path / INFO_FILE).is_file():
            raise AgePredictorError(f"{path} is not an age predictor directory: it has no {INFO_FILE}")
        try:
            info = json.loads((path / INFO_FILE).read_text())
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = LlamaForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
            target = torch.device(device)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise AgePredictorError(f"cannot load the age predictor in {path}: {exc}") from None
        if not {"label_mean", "label_std"} <= set(info):
            raise AgePredictorError(f"{path / INFO_FILE} lacks label_mean and label_std")
        return cls(model, tokenizer, info, target)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def token_count(self, text: str) -> int:
        """Tokens the predictor reads for text (BOS and EOS included)."""
        return len(encode(self.tokenizer, text)) + 1

    @torch.inference_mode()
    def score(self, texts: Sequence[str], batch_size: int = 64) -> list[float]:
        """Predicted log2(step) of each text, in order."""
        scores: list[float] = []
        for start in range(0, len(texts), batch_size):
            ids, mask = _batch(self.tokenizer, texts[start : start + batch_size], self.device)
            out = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
            scores += (out * self.std + self.mean).tolist()
        return scores


def build_regressor(tokenizer: PreTrainedTokenizerBase, config: AgePredictorConfig) -> LlamaForSequenceClassification:
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.dim,
        intermediate_size=max(16, round(8 * config.dim / 3 / 16) * 16),
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    llama.num_labels, llama.problem_type = 1, "regression"  # one scalar output, trained by MSE
    return LlamaForSequenceClassification(llama)  # type: ignore[no-untyped-call]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either side is constant (no linear relation can be read)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _save(
    model: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerBase, info: dict[str, Any], out: Path
) -> None:
    """Write the predictor to out atomically (a staging sibling renamed over it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_age_predictor(
    teacher_dir: Path, out: Path, config: AgePredictorConfig, on_progress: Progress | None = None
) -> AgePredictorReport:
    """Build R_phi from teacher_dir's checkpoints; ValueError (a sentence) when it has too few of them."""
    checkpoints = teacher_checkpoints(teacher_dir)
    if len(checkpoints) < 2:
        raise ValueError(f"{teacher_dir} has {len(checkpoints)} checkpoint; an age predictor needs at least two")
    samples = build_dataset(checkpoints, config, on_progress)
    train = [s for s in samples if not s.held_out]
    held = [s for s in samples if s.held_out]
    labels = np.array([s.label for s in train])
    mean, std = float(labels.mean()), float(labels.std()) or 1.0
    device = resolve_placement(config.device, "float32").device
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoints[-1][1]))  # the teacher's own
    model = torch.nn.Module.to(build_regressor(tokenizer, config), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = LRSchedule(config.lr, config.steps, warmup_steps=max(1, min(30, config.steps // 10)))
    batches = shuffled_batches(train, config.batch_size, random.Random(config.seed))
    for step in range(config.steps):
        batch = next(batches)
        schedule.apply(optimizer, step + 1)
        model.train()
        ids, mask = _batch(tokenizer, [s.text for s in batch], device)
        target = torch.tensor([(s.label - mean) / std for s in batch], device=device)
        loss = torch.nn.functional.mse_loss(model(input_ids=ids, attention_mask=mask).logits[:, 0], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if on_progress is not None:
            on_progress("train", step + 1, config.steps)

    info: dict[str, Any] = {"label": "log2(step)", "label_mean": mean, "label_std": std}
    predictor = AgePredictor(model, tokenizer, info, device)
    predicted = predictor.score([s.text for s in held])
    truth = [s.label for s in held]
    steps = [step for step, _ in checkpoints]
    report = AgePredictorReport(
        out=out.expanduser().resolve(),
        pearson_r=pearson_r(predicted, truth),
        n_held_out=len(held),
        n_train=len(train),
        steps=steps,
        mse=float(np.mean((np.array(predicted) - np.array(truth)) ** 2)),
        mean_score={k: float(np.mean([p for p, s in zip(predicted, held, strict=True) if s.step == k])) for k in steps},
    )
    info |= {
        "pearson_r": report.pearson_r,
        "held_out_mse": report.mse,
        "n_held_out": report.n_held_out,
        "n_train": report.n_train,
        "label_range": [math.log2(steps[0]), math.log2(steps[-1])],
        "steps": steps,
        "mean_score": {str(k): v for k, v in report.mean_score.items()},
        "teacher": str(teacher_dir.expanduser().resolve()),
        "config": asdict(config),
    }
    _save(model, tokenizer, info, report.out)
    return report
