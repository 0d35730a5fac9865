"""Builds a student from its node's parts: model (fresh, or the newest checkpoint's), optimizer,
teacher pool, provenance, privacy ledger and the configured algorithm."""

from __future__ import annotations

from pathlib import Path

from node.client import PeerClient
from node.config import ConfigError, Settings
from node.llm.host import ModelHost
from node.llm.placement import resolve_placement
from node.metrics import NodeMetrics
from node.peers.view import PeerView
from node.privacy.ledger import PrivacyLedger
from node.store import Store
from node.tasks import TaskError, get_task
from student import checkpoints
from student.learner import Learner, LearnerContext, run_schedule
from student.loop import StudentRun
from student.provenance import Provenance
from student.sft import SftLearner
from student.social import SocialLearner
from student.teachers import TeacherPool
from student.tnd import TnDLearner
from student.tripost import TriPosTLearner
from student.yoda import YodaLearner

ALGORITHMS: dict[str, type[Learner]] = {
    learner.name: learner for learner in (TriPosTLearner, YodaLearner, SocialLearner, TnDLearner, SftLearner)
}
CHECKPOINT_DIR = "student"  # under node.data_dir


def build_student(
    settings: Settings, node_id: str, store: Store, client: PeerClient, view: PeerView, metrics: NodeMetrics
) -> StudentRun:
    """ConfigError (a sentence naming the setting) for anything that keeps the student from starting."""
    s = settings.student
    learner_type = ALGORITHMS[s.algorithm]  # the config allows only these names
    try:
        task = get_task(s.task)
    except TaskError as exc:
        raise ConfigError(f"student.task: {exc}") from None
    if learner_type is TnDLearner and task.name != "word_learning":
        raise ConfigError(f"student.algorithm tnd learns the word_learning corpus; student.task is {s.task!r}")
    root = settings.node.data_dir / CHECKPOINT_DIR
    resumed = checkpoints.latest(root)
    try:
        if resumed is not None:
            placement = resolve_placement(settings.model.device, settings.model.dtype)
            host = ModelHost.load(resumed.model_dir, placement)
        else:
            host = ModelHost.from_settings(settings.model, task)
    except (OSError, ValueError) as exc:
        where = resumed.model_dir if resumed else f"model.source {settings.model.source}"
        raise ConfigError(f"{where}: {exc}") from None
    host.on_generated = metrics.generated_tokens.inc
    provenance = Provenance(store)
    pool = TeacherPool(settings, node_id, client, view, provenance, metrics)
    optimizer = host.make_optimizer(s.lr)
    if resumed is None and s.optimizer_state == "from_model":
        source = Path(settings.model.source).expanduser()
        try:
            checkpoints.restore_model_optimizer(source, optimizer)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"student.optimizer_state from_model: {exc}") from None
    ctx = LearnerContext(host, optimizer, task, s, pool, run_schedule(s), run_dir=root)
    privacy = settings.privacy
    ledger = PrivacyLedger(store, privacy.epsilon_budget, privacy.delta, privacy.per_recipient_epsilon)
    metrics.epsilon_budget.set(privacy.epsilon_budget)
    metrics.epsilon_spent.set(ledger.spent)
    ledger.on_change = metrics.epsilon_spent.set
    return StudentRun(settings, learner_type(ctx), provenance, ledger, metrics, root, resumed)
