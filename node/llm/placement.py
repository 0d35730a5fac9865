"""Where a model runs: resolve `model.device` and `model.dtype` settings into torch objects.

``auto`` picks CUDA, then Apple MPS, then CPU; with several GPUs, ``auto`` loads through
accelerate's ``sequential`` device map: layers fill GPU 0 first and go on to the next GPU only
when a model does not fit, so a node outgrows one GPU without new code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PlacementError(ValueError):
    """A device or dtype this machine cannot provide; the message says which and why."""


@dataclass(frozen=True)
class Placement:
    """Where weights go: one device, or accelerate's device map over several GPUs."""

    device: torch.device  # where inputs go (the embedding's device when sharded)
    dtype: torch.dtype
    device_map: str | None = None  # "sequential" to shard across GPUs; None = everything on `device`

    def describe(self) -> str:
        where = str(self.device)
        if self.device_map:
            where = f"{torch.cuda.device_count()} GPUs (device_map={self.device_map})"
        return f"{where}, {str(self.dtype).removeprefix('torch.')}"


def resolve_device(name: str) -> torch.device:
    """The torch device for a setting: auto|cpu|cuda|cuda:N|mps."""
    if not DEVICE_PATTERN.match(name):
        raise PlacementError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PlacementError(f"device {name!r} asked for, but this machine has no CUDA GPU (use cpu or auto)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise PlacementError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PlacementError("device 'mps' asked for, but Apple MPS is not available here (use cpu or auto)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights dtype: auto = bfloat16 on GPUs that support it, float16 on older GPUs, float32 elsewhere."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise PlacementError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return DTYPES[name]


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Device, dtype and (with several GPUs and device auto) accelerate's device map."""
    torch_device = resolve_device(device)
    shard = device == "auto" and torch_device.type == "cuda" and torch.cuda.device_count() > 1
    return Placement(torch_device, resolve_dtype(dtype, torch_device), "sequential" if shard else None)
