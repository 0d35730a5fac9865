"""A student's checkpoints: weights, optimizer state and learner state, written atomically.

One directory per checkpoint, `<data_dir>/student/step-000040/`:
  model/                 the model and tokenizer (safetensors; loadable by `agora model eval`)
  optimizer.safetensors  AdamW's per-parameter tensors
  state.json             step, algorithm, task, optimizer hyperparameters, the learner's state,
                         and the evaluation history
The directory is built under a temporary name, synced, then renamed: a checkpoint either exists
whole or not at all, so `latest` after a crash is the last one fully written. The two newest
are kept. Nothing here is pickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from node.llm.checkpoint import save_checkpoint
from node.llm.host import ModelHost

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
MODEL_DIR = "model"
KEEP = 2
_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def state(self) -> dict[str, Any]:
        data = json.loads((self.path / STATE_FILE).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.path / STATE_FILE} is not a JSON object")
        return data


def checkpoints(root: Path) -> list[Checkpoint]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = [Checkpoint(p, int(m[1])) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def latest(root: Path) -> Checkpoint | None:
    found = checkpoints(root)
    return found[-1] if found else None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """AdamW's state as flat named tensors, and its parameter groups as JSON-able dicts."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, groups


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save(
    root: Path,
    step: int,
    host: ModelHost,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_files: Callable[[Path], None] | None = None,
) -> Checkpoint:
    """Write checkpoint `step` atomically and drop all but the newest two; `extra_files` writes an
    algorithm's own files (e.g. TnD's value head) into the checkpoint before it is renamed."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        with host._lock:  # no update between the weights and the optimizer state
            save_checkpoint(host.model, host.tokenizer, staging / MODEL_DIR, host.metadata)
            tensors, groups = optimizer_tensors(optimizer)
        save_file(tensors, str(staging / OPTIMIZER_FILE))
        document = {**state, "step": step, "optimizer_groups": groups}
        (staging / STATE_FILE).write_text(json.dumps(document, indent=1) + "\n")
        if extra_files is not None:
            extra_files(staging)
        for path in staging.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():  # a replay reached the same step again: the new one replaces it
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in checkpoints(root)[:-KEEP]:
        shutil.rmtree(old.path, ignore_errors=True)
    for leftover in root.glob(".step-*.tmp-*"):  # a crash mid-write leaves these behind
        shutil.rmtree(leftover, ignore_errors=True)
    return Checkpoint(final, step)


def restore_optimizer(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    tensors = load_file(str(checkpoint.path / OPTIMIZER_FILE))
    load_optimizer(optimizer, tensors, checkpoint.state()["optimizer_groups"])


def save_model_optimizer(model_dir: Path, optimizer: torch.optim.Optimizer) -> Path:
    """AdamW's state beside a saved model (`model_dir/optimizer.safetensors`, its parameter groups
    as JSON in the file's metadata), so that a later run can continue that model's training with
    `student.optimizer_state: from_model`."""
    tensors, groups = optimizer_tensors(optimizer)
    path = model_dir / OPTIMIZER_FILE
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups)})
    return path


def restore_model_optimizer(model_dir: Path, optimizer: torch.optim.Optimizer) -> None:
    """Load what save_model_optimizer wrote; OSError/ValueError with a sentence when it is missing or
    does not fit this model's parameters."""
    path = model_dir / OPTIMIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the model was saved without its optimizer state")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "param_groups" not in metadata:
        raise ValueError(f"{path} has no parameter groups in its metadata; it was not written by Agora")
    try:
        load_optimizer(optimizer, load_file(str(path)), json.loads(metadata["param_groups"]))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} does not fit this model's parameters ({exc})") from None
