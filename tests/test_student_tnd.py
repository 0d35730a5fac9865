"""TnD against a real teacher node (a tiny teacher trained from scratch and its age predictor):
the c:r schedule, rewards as the reference code gives them (R_phi for trials, the teacher's age for
demonstrations, minus log2 n) and the departures (a reference student's A_n, R_phi-scored
demonstrations), PPO's own optimizer beside the CLM one, whitened advantages, trials and
demonstrations together in the PPO batch, the ablations and the double-CLM control, resume state,
and `agora learn` + `agora tnd report` end to end."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from node.app import Node
from node.cli import main
from node.llm import TinySpec
from node.store import read_rows
from node.tasks.word_learning import WordLearningTask
from student.build import CHECKPOINT_DIR
from student.learner import StepResult
from student.loop import StudentRun
from student.tnd import (
    OWN_CORPUS_SEED,
    RUN_DIR,
    SURPRISAL_FILE,
    VALUE_HEAD_FILE,
    Interaction,
    TnDLearner,
    completes_a_sentence,
)
from teacher.age_predictor import AgePredictor, AgePredictorConfig, AgePredictorReport, train_age_predictor
from teacher.tnd_teacher import TeacherTrainConfig, train_teacher
from tests.nodes import started
from tests.students import student_run, student_settings
from tests.teachers import TINY_MODEL, teacher_settings

TINY = TinySpec(layers=1, dim=32, heads=2)
TND_STUDENT: dict[str, Any] = {
    "task": "word_learning",
    "algorithm": "tnd",
    "batch_size": 3,
    "eval_every": 100,
    "checkpoint_every": 100,
    "eval_n": 2,
    "tnd_max_new_tokens": 6,
    "tnd_probe_contexts": 1,
}


@pytest.fixture(scope="module")
def reward(tmp_path_factory: pytest.TempPathFactory) -> AgePredictorReport:
    root = tmp_path_factory.mktemp("tnd-student")
    teacher = train_teacher(
        root / "teacher", TeacherTrainConfig(steps=20, batch_size=16, spec=TINY, corpus=1000, device="cpu")
    )
    config = AgePredictorConfig(
        contexts=12, samples=2, max_new_tokens=8, layers=1, dim=32, heads=2, steps=60, device="cpu"
    )
    return train_age_predictor(teacher.out, root / "reward", config)


def _teacher(reward: AgePredictorReport) -> Node:
    final = reward.out.parent / "teacher" / "final"
    model = {"source": str(final), "device": "cpu", "dtype": "float32"}
    teacher = {"tasks": ["word_learning"], "private_data": {}, "age_predictor": str(reward.out)}
    return Node(teacher_settings(node={"name": "teacher"}, model=model, teacher=teacher))


class RecordingTnD(TnDLearner):
    """The real learner, keeping every interactive step's record for the assertions."""

    interactions: list[Interaction]

    async def interact(self, step: int, batch: list[str]) -> StepResult:
        result = await super().interact(step, batch)
        assert self.last is not None and self.last.step == step
        self.interactions = [*getattr(self, "interactions", []), self.last]
        return result


async def _learn(reward: AgePredictorReport, **student: Any) -> tuple[StudentRun, RecordingTnD, list[StepResult]]:
    async with started(_teacher(reward)) as (address,):
        node = Node(student_settings([address], **{**TND_STUDENT, **student}))
        async with started(node):
            run = await student_run(node)
            learner = RecordingTnD(run.learner.ctx)
            run.learner = learner
            results: list[StepResult] = []
            await run.run(on_step=lambda step, total, result: results.append(result))
            return run, learner, results


def test_tnd_accuracy_asks_for_a_grammatical_sentence_that_continues_the_context() -> None:
    task = WordLearningTask()
    sentence = task.sentences(1, seed=3)[0].split()
    context, rest = " ".join(sentence[:2]), " ".join(sentence[2:])
    assert completes_a_sentence(task, context, rest)
    assert completes_a_sentence(task, context, rest + " look at the")  # what follows the end mark is not graded
    assert not completes_a_sentence(task, context, " ".join(sentence[2:-1]))  # no end: unfinished
    assert not completes_a_sentence(task, context, "the the the .")
    assert not completes_a_sentence(task, context, "")


def test_tnd_alternates_clm_and_interactive_steps_and_rewards_as_the_reference_code(
    reward: AgePredictorReport,
) -> None:
    run, learner, results = asyncio.run(_learn(reward, steps=8, tnd_teacher_steps=1024, tnd_ppo_minibatch=2))
    # c = 3 CLM steps, then r = 1 interactive step: steps 4 and 8 interact, the rest train on the corpus.
    assert [learner.is_interactive(n) for n in range(1, 9)] == [False, False, False, True] * 2
    assert [i.step for i in learner.interactions] == [4, 8]
    assert [set(r.kinds) for r in results] == [{"corpus"}] * 3 + [{"trial", "demo"}] + [{"corpus"}] * 3 + [
        {"trial", "demo"}
    ]
    predictor = AgePredictor.load(reward.out)
    data_dir = run.settings.node.data_dir
    lessons = dict(read_rows(data_dir, "SELECT applied_step, lesson_id FROM received_lessons"))
    assert sorted(lessons) == [4, 8]  # one Demonstrate lesson per interactive step, applied there
    for record in learner.interactions:
        # Trials and demonstrations of the same 5-token prompts, both in the PPO batch.
        assert record.kinds == ["trial"] * 3 + ["demo"] * 3
        assert all(len(prompt.split()) <= 5 for prompt in record.prompts)
        # A trial's reward is R_phi(text) - log2 n; a demonstration's, log2(teacher's steps) - log2 n.
        trials = [f"{p} {t}".strip() for p, t in zip(record.prompts, record.trials, strict=True)]
        assert record.baseline == math.log2(record.step) and record.reference_texts == []
        assert record.scores[:3] == pytest.approx(predictor.score(trials), abs=1e-5)
        assert record.scores[3:] == [10.0] * 3  # log2(1024)
        assert record.rewards == pytest.approx([s - record.baseline for s in record.scores])
        # Advantages are whitened over the response tokens of all six samples, then one epoch of
        # minibatches of 2: three steps of PPO's optimizer.
        assert record.advantages is not None and record.mask is not None
        kept = record.advantages[record.mask > 0]
        assert abs(float(kept.mean())) < 1e-5 and abs(float(kept.std()) - 1.0) < 1e-3
        assert len(record.minibatch_losses) == 3
        assert all(math.isfinite(losses.total.item()) for losses in record.minibatch_losses)
    assert learner.reference is None  # the reference code's experiments run without --ref_reward
    # Two optimizers over the same weights: PPO's Adam at its constant lr took 2 x 3 minibatch
    # steps; the CLM AdamW took one step per corpus batch and one per interactive step's CLM update.
    assert learner.ppo_optimizer is not learner.ctx.optimizer
    assert type(learner.ppo_optimizer) is torch.optim.Adam
    assert [g["lr"] for g in learner.ppo_optimizer.param_groups] == [2e-5]
    weight = next(learner.ctx.host.model.parameters())
    assert int(learner.ppo_optimizer.state[weight]["step"]) == 6
    assert int(learner.ctx.optimizer.state[weight]["step"]) == 8


def test_the_reference_student_and_scored_demonstrations_are_settings(reward: AgePredictorReport) -> None:
    _, learner, _ = asyncio.run(_learn(reward, steps=4, tnd_reference=True, tnd_demo_reward="age_predictor"))
    (record,) = learner.interactions
    predictor = AgePredictor.load(reward.out)
    # r = R_phi(text) - A_n for trials and demonstrations alike, A_n the predictor's mean score of
    # the reference student's continuations of the same prompts.
    texts = [f"{p} {t}".strip() for p, t in zip(record.prompts, record.trials, strict=True)]
    texts += [f"{p} {d}".strip() for p, d in zip(record.prompts, record.demos, strict=True)]
    assert record.scores == pytest.approx(predictor.score(texts), abs=1e-5)
    reference = [f"{p} {c}".strip() for p, c in zip(record.prompts, record.reference_texts, strict=True)]
    assert len(reference) == 3
    assert record.baseline == pytest.approx(sum(predictor.score(reference)) / 3, abs=1e-5)
    assert record.rewards == pytest.approx([s - record.baseline for s in record.scores])
    # The reference trained in lockstep and is a different model from the student by now.
    assert learner.reference is not None
    student_weights = next(learner.ctx.host.model.parameters())
    assert not torch.equal(student_weights, next(learner.reference.model.parameters()))


def test_the_ablations_change_exactly_what_enters_the_interactive_step(reward: AgePredictorReport) -> None:
    run, learner, _ = asyncio.run(_learn(reward, steps=4, tnd_mode="trial_only"))
    (record,) = learner.interactions
    assert record.kinds == ["trial"] * 3 and record.demos == []
    assert read_rows(run.settings.node.data_dir, "SELECT COUNT(*) FROM received_lessons") == [(0,)]  # no Demonstrate

    run, learner, _ = asyncio.run(_learn(reward, steps=4, tnd_mode="demo_only"))
    (record,) = learner.interactions
    assert record.kinds == ["demo"] * 3 and record.trials == []

    run, learner, results = asyncio.run(_learn(reward, steps=4, tnd_mode="clm_only"))
    assert getattr(learner, "interactions", []) == [] and learner.reference is None
    assert [set(r.kinds) for r in results] == [{"corpus"}] * 4

    # The banned-word teacher: the request carries the words, and no demonstration says them.
    _, learner, _ = asyncio.run(_learn(reward, steps=4, tnd_banned_words=["the", "a"]))
    (record,) = learner.interactions
    assert len(record.demos) == 3 and not any({"the", "a"} & set(demo.split()) for demo in record.demos)

    # The double-CLM control: trials and demonstrations, their CLM update, and no reward or PPO.
    run, learner, results = asyncio.run(_learn(reward, steps=4, tnd_mode="double_clm"))
    (record,) = learner.interactions
    assert record.kinds == ["trial"] * 3 + ["demo"] * 3 and len(record.demos) == 3
    assert record.scores == [] and record.losses is None and math.isfinite(record.clm_loss)
    assert results[-1].loss == record.clm_loss
    assert read_rows(run.settings.node.data_dir, "SELECT COUNT(*) FROM received_lessons") == [(1,)]
    weight = next(learner.ctx.host.model.parameters())
    assert weight not in learner.ppo_optimizer.state and int(learner.ctx.optimizer.state[weight]["step"]) == 4


def test_multi_sentence_texts_give_prompts_whose_continuations_go_past_one_utterance(
    reward: AgePredictorReport,
) -> None:
    _, learner, _ = asyncio.run(_learn(reward, steps=4, tnd_corpus=12, tnd_sentences_per_text=3))
    assert learner.own_corpus == WordLearningTask().texts(4, OWN_CORPUS_SEED, 3)  # 12 sentences, 3 a text
    (record,) = learner.interactions
    texts = learner.corpus_batch(4)
    assert all(text in learner.own_corpus for text in texts)
    assert record.prompts == learner.prompts_of(texts)


def test_a_checkpoint_keeps_the_value_head_and_the_reference_and_a_resume_restores_them(
    reward: AgePredictorReport,
) -> None:
    run, learner, _ = asyncio.run(_learn(reward, steps=4, checkpoint_every=4, tnd_reference=True))
    checkpoint = run.settings.node.data_dir / CHECKPOINT_DIR / "step-000004"
    saved = load_file(str(checkpoint / VALUE_HEAD_FILE))
    assert torch.equal(saved["summary.weight"], learner.value_head.summary.weight.detach())
    fresh = RecordingTnD(learner.ctx)
    fresh.load_state_dict(json.loads((checkpoint / "state.json").read_text())["learner"])
    fresh.load_files(checkpoint)
    assert torch.equal(fresh.value_head.summary.weight, learner.value_head.summary.weight)
    assert fresh.reference is not None and learner.reference is not None
    for mine, theirs in zip(fresh.reference.model.parameters(), learner.reference.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert fresh.steps_done == 4 and fresh.trial_counts == learner.trial_counts
    # PPO's optimizer state comes back too (its moments are its own).
    weight = next(learner.ctx.host.model.parameters())
    assert torch.equal(fresh.ppo_optimizer.state[weight]["exp_avg"], learner.ppo_optimizer.state[weight]["exp_avg"])


def test_agora_learn_runs_tnd_and_agora_tnd_report_reads_its_curves(
    reward: AgePredictorReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = _teacher(reward)

    async def learn() -> int:
        async with started(teacher) as (address,):
            document = {
                "node": {"name": "learner", "data_dir": str(tmp_path / "data"), "roles": ["student"]},
                "model": TINY_MODEL,
                "peers": {"seeds": [address]},
                "metrics": {"listen": "127.0.0.1:0"},
                "student": {**TND_STUDENT, "steps": 8, "eval_every": 2},
                "security": {"insecure": True},
            }
            document["node"]["listen"] = "127.0.0.1:0"
            config = tmp_path / "student.yaml"
            config.write_text(yaml.safe_dump(document))
            return await asyncio.to_thread(main, ["learn", "--config", str(config)])

    assert asyncio.run(learn()) == 0
    assert capsys.readouterr().out.startswith("tnd on word_learning: 8 steps in ")
    run_dir = tmp_path / "data" / CHECKPOINT_DIR / RUN_DIR
    lines = [json.loads(line) for line in (run_dir / SURPRISAL_FILE).read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2, 4, 6, 8]
    assert all(len(line["surprisal"]) > 50 for line in lines)
    assert sum(lines[-1]["trial_counts"].values()) > 0  # words of the student's own trials were counted
    assert main(["tnd", "report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "nAoA" in out
    for name in ("report.md", "word_metrics.json", "curves.png"):
        assert (run_dir / name).stat().st_size > 0
