"""The machine a figure was measured on: CPU, cores, GPU and versions, for benchmarks and reports."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

from node import __version__


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, GPU, versions."""
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "agora": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
