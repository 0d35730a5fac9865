"""Builds a node's teacher from its settings: tasks, private data, guard, ledger and model."""

from __future__ import annotations

import numpy as np

from node.config import ConfigError, Settings
from node.llm.host import ModelHost
from node.metrics import NodeMetrics
from node.privacy.guard import LeakageGuard
from node.privacy.ledger import PrivacyLedger
from node.security.identity import NodeIdentity
from node.store import Store
from node.tasks import Task, TaskError, get_task
from node.tasks.jsonl_task import JsonlTask
from teacher.age_predictor import AgePredictor, AgePredictorError
from teacher.core import TeacherCore
from teacher.private import PrivateData
from teacher.release import Releaser

PUBLIC_EXAMPLES_PER_SPLIT = 40  # generated examples per split that show the guard each task's public format


def public_texts(tasks: dict[str, Task]) -> list[str]:
    """Text anyone can generate: the built-in tasks' own examples (never a jsonl task's, its file
    may be the private data itself)."""
    return [
        text
        for task in tasks.values()
        if not isinstance(task, JsonlTask)
        for text in task.corpus(seed=0, n_per_split=PUBLIC_EXAMPLES_PER_SPLIT)
    ]


def build_teacher(
    settings: Settings, identity: NodeIdentity, store: Store, metrics: NodeMetrics, host: ModelHost | None = None
) -> TeacherCore:
    """ConfigError (a sentence naming the setting) for anything that keeps the teacher from starting."""
    names = settings.teacher.tasks
    try:
        tasks = {name: get_task(name) for name in names}
    except TaskError as exc:
        raise ConfigError(f"teacher.tasks: {exc}") from None
    private = PrivateData.load(settings.teacher.private_data, names)
    privacy = settings.privacy
    canaries: list[str] = []
    if privacy.canaries_file is not None:
        try:
            canaries = LeakageGuard.read_canaries(privacy.canaries_file)
        except ValueError as exc:
            raise ConfigError(f"privacy.canaries_file: {exc}") from None
    guard = LeakageGuard(
        private.texts(),
        canaries,
        ngram=privacy.ngram_block,
        min_edit_distance=privacy.min_edit_distance,
        block_pii=privacy.block_pii,
        public_texts=public_texts(tasks),
    )
    ledger = PrivacyLedger(store, privacy.epsilon_budget, privacy.delta, privacy.per_recipient_epsilon)
    metrics.epsilon_budget.set(privacy.epsilon_budget)
    metrics.epsilon_spent.set(ledger.spent)
    ledger.on_change = metrics.epsilon_spent.set
    if host is None:
        try:
            host = ModelHost.from_settings(settings.model, tasks[names[0]])
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.source {settings.model.source}: {exc}") from None
    host.on_generated = metrics.generated_tokens.inc
    age_predictor = None
    if settings.teacher.age_predictor is not None:
        try:
            age_predictor = AgePredictor.load(settings.teacher.age_predictor, host.device)
        except AgePredictorError as exc:
            raise ConfigError(f"teacher.age_predictor: {exc}") from None
    releaser = Releaser(identity, ledger, guard, store, metrics)
    return TeacherCore(settings, host, tasks, private, releaser, np.random.default_rng(), age_predictor)
