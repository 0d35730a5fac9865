"""Checkpoints on disk: weights (safetensors), tokenizer and a small JSON metadata file.

Writes are atomic: everything goes into a temporary sibling directory, which is renamed over
the target only once complete, so a crash never leaves a half-written checkpoint behind. If a
crash lands between moving the old checkpoint aside and moving the new one in, the next load
puts the old one back.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

METADATA_FILE = "agora-model.json"


@dataclass
class ModelMetadata:
    """What Agora knows about a checkpoint beyond the Hugging Face files."""

    task: str | None = None  # the task whose corpus the tokenizer was trained on
    tokenizer_level: str | None = None  # char | word for tokenizers trained here
    source: str = "tiny"  # "tiny" or the directory / hub id it started from
    train_steps: int = 0  # optimizer steps taken since it was built or loaded from the hub
    agora_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # eval accuracies, training settings …

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMetadata:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, metadata: ModelMetadata
) -> Path:
    """Write model, tokenizer and metadata to out_dir atomically (replacing what was there)."""
    out_dir = out_dir.expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{tag}")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / METADATA_FILE).write_text(json.dumps(asdict(metadata), indent=2) + "\n")
        _fsync_tree(staging)
        if out_dir.exists():
            previous = out_dir.with_name(f".{out_dir.name}.old-{tag}")
            out_dir.rename(previous)
            staging.rename(out_dir)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def recover_checkpoint(out_dir: Path) -> None:
    """Put back a checkpoint left aside by a crash in the middle of `save_checkpoint`."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists():
        return
    aside = sorted(out_dir.parent.glob(f".{out_dir.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if aside:
        aside[-1].rename(out_dir)


def read_metadata(model_dir: Path) -> ModelMetadata:
    """The checkpoint's metadata; defaults for a plain Hugging Face directory without one."""
    path = model_dir / METADATA_FILE
    if not path.is_file():
        return ModelMetadata(source=str(model_dir))
    return ModelMetadata.from_json(json.loads(path.read_text()))
