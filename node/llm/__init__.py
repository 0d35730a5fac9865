"""The model host (DESIGN §6): load / build, generate off the event loop, score, train, save.

host = ModelHost.build(get_task("arithmetic"), TinySpec(layers=2, dim=64, heads=4))
[g] = await host.generate(["Q: (1 + 2) =\\nAnswer: "], SamplingParams(max_new_tokens=40))
host.save(Path("models/tiny"))
"""

from __future__ import annotations

from transformers.utils import logging as _hf_logging

from node.llm.checkpoint import ModelMetadata
from node.llm.host import ModelHost
from node.llm.loading import ModelLoadError, TinySpec
from node.llm.placement import Placement, PlacementError, resolve_placement
from node.llm.sampling import Generation, SamplingParams
from node.llm.scoring import ContinuationScore
from node.llm.training import TrainingExample

# Saving and loading tiny checkpoints is instant; transformers' per-shard progress bars are noise.
_hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

__all__ = [
    "ContinuationScore",
    "Generation",
    "ModelHost",
    "ModelLoadError",
    "ModelMetadata",
    "Placement",
    "PlacementError",
    "SamplingParams",
    "TinySpec",
    "TrainingExample",
    "resolve_placement",
]
