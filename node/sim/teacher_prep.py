"""The teacher's side of a simulation, made before any node starts: its private data with the
planted canary, and its model, trained with the same commands an operator runs.

TnD (word_learning): `agora tnd train-teacher --private` (the canary sentence is in the teacher's
training text) then `agora tnd train-reward` for R_phi. Other tasks: `agora model train`, and
private JSONL drawn from the task's generator with the canary as one more record.

The models go to `<out>/models/` and are reused by a later run in the same --out with the same
teacher settings, so a second `agora simulate` skips the wait.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from node.config import ConfigError
from node.privacy.audit import Canary, CanaryError, parse_canary
from node.sim.config import SimConfig
from node.sim.network import TeacherAssets
from node.tasks import get_task
from node.tasks.word_learning import WordLearningTask
from teacher.tnd_teacher import TEACHER_FILE

STAMP = "simulate-teacher.json"
PRIVATE_RECORDS = 200  # the teacher's private examples of a task with a generator

Say = Callable[[str], None]


def simulation_canary(config: SimConfig) -> Canary:
    """The canary to plant and audit. On word_learning its secret is a word of the vocabulary, and
    its rivals are the words that share its category (the other nouns), so grammar alone does not
    rank it high; elsewhere it ends in digits or a first name, as `agora audit` reads canaries."""
    if config.task != "word_learning":
        try:
            return parse_canary(config.canary_text())
        except CanaryError as exc:
            raise ConfigError(f"canary {config.canary_text()!r}: {exc}") from None
    vocabulary = WordLearningTask().vocabulary
    words = config.canary_text().split()
    unknown = [word for word in words if word not in vocabulary]
    if len(words) < 2 or unknown:
        raise ConfigError(
            f"canary {config.canary_text()!r}: on word_learning it must be 2 or more words of the task's vocabulary"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    secret = words[-1]
    category = vocabulary[secret]
    rivals = tuple(sorted(w for w, tags in vocabulary.items() if tags & category and w != secret))
    context = config.canary_text()[: config.canary_text().rstrip().rfind(secret)]
    return Canary(context, secret, "word", words=rivals)


_PROGRESS = re.compile(r"^\w+ (\d+)/(\d+)\b")
_NOISE = ("Warning:", "return forward_call", "[transformers]")  # library deprecation chatter; kept in the log


def _worth_showing(line: str) -> bool:
    """Progress at each quarter, results and errors; the log file keeps every line."""
    if any(marker in line for marker in _NOISE):
        return False
    progress = _PROGRESS.match(line.strip())
    if progress is None:
        return True
    done, total = int(progress[1]), int(progress[2])
    return done * 4 % total == 0 if total >= 4 else True


def _run(command: list[str], say: Say, log: Path) -> None:
    """Run an agora command, echoing its progress lines indented; raise with its tail on failure."""
    say("      $ agora " + " ".join(command))
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=None,
        )
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if _worth_showing(line):
                say("        " + line.rstrip())
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"`agora {' '.join(command[:3])}` failed (exit {code}); see {log}")


def _stamp(config: SimConfig) -> dict[str, object]:
    reward = [config.reward_contexts, config.reward_steps] if config.task == "word_learning" else None
    return {"task": config.task, "steps": config.teacher_steps, "reward": reward, "canary": config.canary_text()}


def prepare_teacher(config: SimConfig, out: Path, say: Say) -> tuple[TeacherAssets, str, float]:
    """The teacher's assets, a sentence on where its model came from, and the seconds it took."""
    began = time.monotonic()
    canary = simulation_canary(config)
    secrets = out / "teacher-private"
    secrets.mkdir(parents=True, exist_ok=True)
    canaries_file = secrets / "canaries.txt"
    canaries_file.write_text(config.canary_text() + "\n", encoding="utf-8")
    models, logs = out / "models", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reuse = (models / STAMP).exists() and json.loads((models / STAMP).read_text()) == _stamp(config)

    if config.task == "word_learning":
        private = secrets / "sentences.txt"
        private.write_text(config.canary_text() + "\n", encoding="utf-8")
        if config.teacher_model is not None:
            root, how = config.teacher_model, f"loaded from {config.teacher_model}"
            missing = [str(root / p) for p in ("teacher/final", "reward") if not (root / p).is_dir()]
            if missing:
                raise ConfigError(
                    f"teacher_model {root}: for TnD it must hold teacher/final and reward/ (as <out>/models of an "
                    f"earlier `agora simulate`); missing {', '.join(missing)}"
                )
        elif reuse:
            root, how = models, f"reused from {models} (trained by an earlier run)"
        else:
            root = models
            teacher, reward = str(models / "teacher"), str(models / "reward")
            train = ["tnd", "train-teacher", "--out", teacher, "--steps", str(config.teacher_steps)]
            _run([*train, "--private", str(private), "--force"], say, logs / "train-teacher.log")
            reward_size = ["--contexts", str(config.reward_contexts), "--steps", str(config.reward_steps)]
            _run(
                ["tnd", "train-reward", "--teacher", teacher, "--out", reward, *reward_size, "--force"],
                say,
                logs / "train-reward.log",
            )
            how = f"trained by `agora tnd train-teacher` ({config.teacher_steps} steps) and `agora tnd train-reward`"
        trained = json.loads((root / "teacher" / TEACHER_FILE).read_text(encoding="utf-8"))
        assets = TeacherAssets(root / "teacher" / "final", root / "reward", None, canaries_file, int(trained["steps"]))
    else:
        private = secrets / f"{config.task.replace(':', '_').replace('/', '_')}.jsonl"
        task = get_task(config.task)
        records = task.generate("train", task.at_most("train", PRIVATE_RECORDS), 7)
        rows = [{"input": e.question, "output": e.rationale} for e in records]
        rows.append({"input": canary.context.strip(), "output": config.canary_text()})
        private.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        if config.teacher_model is not None:
            # a directory, or a hub id (the teacher node's model.source; offline with HF_HUB_OFFLINE=1)
            model, how = config.teacher_model, f"loaded from {config.teacher_model}"
        elif reuse:
            model, how = models / "teacher", f"reused from {models / 'teacher'} (trained by an earlier run)"
        else:
            model = models / "teacher"
            command = ["model", "train", "--task", config.task, "--out", str(model)]
            _run([*command, "--steps", str(config.teacher_steps)], say, logs / "train-teacher.log")
            how = f"trained by `agora model train` ({config.teacher_steps} steps)"
        assets = TeacherAssets(model, None, private, canaries_file)

    if config.teacher_model is None and not reuse:
        (models / STAMP).write_text(json.dumps(_stamp(config)), encoding="utf-8")
    return assets, how, time.monotonic() - began
