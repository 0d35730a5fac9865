"""What every lesson maker shares: the model, the tasks, the private data, the noisy vote, and
prompt building that always fits the model's context.

The teacher's model is treated as public: it must not have been trained on the private data
except under DP-SGD (`agora teacher dp-train`), after which sampling from it is post-processing
and free. Everything else that reads private data goes through a mechanism and a charge, except
Social Learning's own methods when the operator chooses them (`teacher.instruct_method`,
`teacher.exemplify_method` private_prompt): those are not DP, charge nothing and say so
(`teacher.verbal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.config import Settings
from node.llm.host import ModelHost
from node.llm.sampling import SamplingParams
from node.llm.tokenizer import encode
from node.privacy.accounting import Charge, gnmax_charge, lnmax_charge
from node.privacy.pate import NoisyVote
from node.rpc.agora.v1 import node_pb2
from node.tasks.base import Task
from teacher.age_predictor import AgePredictor
from teacher.private import PrivateData, PrivateRecord
from teacher.release import Releaser


def shot(record: PrivateRecord) -> str:
    """One example in a few-shot prompt."""
    return f"Input: {record.input}\nOutput: {record.output}\n\n"


@dataclass
class TeacherCore:
    settings: Settings
    host: ModelHost
    tasks: dict[str, Task]
    private: PrivateData
    releaser: Releaser
    rng: np.random.Generator  # DP noise; seeded from OS entropy (no secure_mode: torchcsprng is unavailable)
    age_predictor: AgePredictor | None = None  # TnD's R_phi (teacher.age_predictor), served by Score SCORE_KIND_AGE

    @property
    def vote(self) -> NoisyVote:
        privacy = self.settings.privacy
        if privacy.lnmax_epsilon is not None:
            return NoisyVote(laplace_epsilon=privacy.lnmax_epsilon)
        return NoisyVote(sigma=privacy.gnmax_sigma)

    def vote_charge(self, shards: int, queries: int) -> Charge:
        privacy = self.settings.privacy
        if privacy.lnmax_epsilon is not None:
            return lnmax_charge(privacy.lnmax_epsilon, shards, queries)
        return gnmax_charge(privacy.gnmax_sigma, shards, queries)

    @property
    def model_info(self) -> node_pb2.ModelInfo:
        return node_pb2.ModelInfo(
            id=self.host.model_id, revision=self.settings.model.revision, parameter_count=self.host.parameter_count
        )

    @property
    def model_mechanism(self) -> str:
        """What covers text the model writes: DP-SGD if it was fine-tuned privately, else nothing."""
        return "dp_sgd" if "dp_sgd" in self.host.metadata.extra else "none"

    def shards(self, task: str) -> list[list[PrivateRecord]]:
        """Disjoint shards of the task's private records (record i in shard i mod n)."""
        records = self.private.records(task)
        n = max(1, min(self.settings.privacy.shards, len(records)))
        size = self.settings.teacher.examples_per_shard
        groups: list[list[PrivateRecord]] = [records[i::n][:size] for i in range(n)]
        return [group for group in groups if group]

    def token_count(self, text: str) -> int:
        return len(encode(self.host.tokenizer, text))

    def fit(self, shots: Sequence[str], suffix: str, max_new_tokens: int) -> str:
        """As many shots as fit before suffix in the model's context, leaving room to generate."""
        room = self.host.max_positions - max_new_tokens - self.token_count(suffix)
        prompt = ""
        for text in shots:
            if self.token_count(prompt + text) > room:
                break
            prompt += text
        return prompt + suffix

    def clip(self, text: str, max_new_tokens: int) -> str:
        """The end of text that fits before max_new_tokens in the context (for student prompts)."""
        room = self.host.max_positions - max_new_tokens
        while text and self.token_count(text) > room:
            text = text[len(text) // 8 or 1 :]
        return text

    def sampling(
        self, max_new_tokens: int, temperature: float | None = None, stop: Sequence[str] = ()
    ) -> SamplingParams:
        tau = self.settings.teacher.temperature if temperature is None else temperature
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=tau, top_k=0, top_p=1.0, stop=tuple(stop))
