"""TnD's teacher side: a tiny teacher trained from scratch with log-spaced checkpoints, the age
predictor R_phi built from them, Score SCORE_KIND_AGE served by a real teacher node over gRPC,
and `agora tnd train-teacher | train-reward` on the command line."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc import aio

from node.app import Node
from node.cli import main
from node.config import ConfigError
from node.llm import ModelHost, TinySpec, resolve_placement
from node.llm.sampling import SamplingParams
from node.llm.training import IGNORE, clm_example, encode_batch
from node.rpc.agora.v1 import teacher_pb2
from node.tasks.word_learning import WordLearningTask
from teacher.age_predictor import (
    INFO_FILE,
    AgePredictor,
    AgePredictorConfig,
    AgePredictorReport,
    age_text,
    build_dataset,
    train_age_predictor,
)
from teacher.tnd_teacher import (
    TEACHER_FILE,
    TeacherTrainConfig,
    TeacherTrainReport,
    checkpoint_schedule,
    teacher_checkpoints,
    train_teacher,
)
from tests.nodes import running_node
from tests.teachers import Student, teacher_settings

TINY = TinySpec(layers=1, dim=32, heads=2)
TEACHER = TeacherTrainConfig(steps=30, batch_size=16, spec=TINY, corpus=2000, held_out=32, device="cpu")
REWARD = AgePredictorConfig(
    contexts=24, samples=2, max_new_tokens=12, layers=1, dim=32, heads=2, steps=150, device="cpu"
)
CPU = resolve_placement("cpu", "float32")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> TeacherTrainReport:
    return train_teacher(tmp_path_factory.mktemp("tnd") / "teacher", TEACHER)


@pytest.fixture(scope="module")
def reward(teacher_run: TeacherTrainReport) -> AgePredictorReport:
    return train_age_predictor(teacher_run.out, teacher_run.out.parent / "reward", REWARD)


def test_a_teacher_trained_on_multi_sentence_texts_goes_on_past_the_first_end_mark(tmp_path: Path) -> None:
    config = TeacherTrainConfig(
        steps=150, batch_size=16, lr=1e-2, spec=TinySpec(layers=1, dim=32, heads=2), corpus=600, device="cpu"
    )
    with pytest.raises(ValueError, match="sentences_per_text"):
        replace(config, sentences_per_text=0)
    report = train_teacher(tmp_path / "t", replace(config, sentences_per_text=4))
    host = ModelHost.load(report.final, resolve_placement("cpu", "float32"))
    outputs = host.generate_sync(["look at"] * 8, [SamplingParams(max_new_tokens=24, seed=i) for i in range(8)])
    ends = [sum(word in {".", "!", "?"} for word in output.text.split()) for output in outputs]
    assert sum(ends) / len(ends) >= 1.5  # it learned that an utterance is followed by another


def test_checkpoint_schedule_is_2_4_6_8_times_powers_of_ten_and_the_last_step() -> None:
    assert checkpoint_schedule(30) == [2, 4, 6, 8, 10, 20, 30]
    assert checkpoint_schedule(7) == [2, 4, 6, 7]
    assert checkpoint_schedule(100) == [2, 4, 6, 8, 10, 20, 40, 60, 80, 100]
    assert checkpoint_schedule(2000) == [2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 800, 1000, 2000]
    assert checkpoint_schedule(1) == [1]


def test_a_clm_example_learns_the_whole_sentence_after_bos() -> None:
    host = ModelHost.build(WordLearningTask(), TINY, CPU)
    batch = encode_batch(host.tokenizer, [clm_example("look at the dog !")], 64, CPU.device)
    ids, labels = batch.input_ids[0].tolist(), batch.labels[0].tolist()
    assert ids[0] == host.tokenizer.bos_token_id and labels[0] == IGNORE
    assert labels[1:] == ids[1:] and ids[-1] == host.tokenizer.eos_token_id and len(ids) == 7


def test_the_teacher_keeps_loadable_log_spaced_checkpoints_and_learns(teacher_run: TeacherTrainReport) -> None:
    out = teacher_run.out
    on_disk = teacher_checkpoints(out)
    assert [step for step, _ in on_disk] == [2, 4, 6, 8, 10, 20, 30] == [c.step for c in teacher_run.checkpoints]
    final = ModelHost.load(out / "final", CPU)
    for step, path in on_disk:
        host = ModelHost.load(path, CPU)
        assert host.metadata.train_steps == step and host.metadata.extra["tnd_teacher"]["step"] == step
    last = ModelHost.load(on_disk[-1][1], CPU)
    for mine, theirs in zip(final.model.parameters(), last.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)  # final/ is the last step's model
    losses = teacher_run.losses
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    held = [c.held_out_loss for c in teacher_run.checkpoints]
    assert held[-1] < held[0] - 0.5
    summary = json.loads((out / TEACHER_FILE).read_text())
    assert summary["steps"] == 30 and [c["step"] for c in summary["checkpoints"]] == [2, 4, 6, 8, 10, 20, 30]
    assert summary["losses"] == losses and summary["final"] == "final"


def test_the_age_dataset_labels_each_text_with_log2_of_its_checkpoint_step(teacher_run: TeacherTrainReport) -> None:
    checkpoints = [teacher_checkpoints(teacher_run.out)[i] for i in (0, -1)]  # steps 2 and 30
    config = AgePredictorConfig(contexts=5, samples=2, max_new_tokens=6, held_out=0.4, device="cpu")
    samples = build_dataset(checkpoints, config)
    assert len(samples) == 2 * 5 * 2
    assert {(s.step, s.label) for s in samples} == {(2, 1.0), (30, math.log2(30))}
    held = {s.context for s in samples if s.held_out}
    assert len(held) == 2 and not held & {s.context for s in samples if not s.held_out}  # split by context
    assert [s.text for s in build_dataset(checkpoints, config)] == [s.text for s in samples]  # fixed seeds


def test_the_age_predictor_loads_scores_and_correlates_with_the_step(
    teacher_run: TeacherTrainReport, reward: AgePredictorReport
) -> None:
    predictor = AgePredictor.load(reward.out)
    info = json.loads((reward.out / INFO_FILE).read_text())
    assert info["steps"] == [2, 4, 6, 8, 10, 20, 30] and info["label_range"] == [1.0, math.log2(30)]
    assert -1 <= info["pearson_r"] == reward.pearson_r <= 1
    assert reward.pearson_r > 0.3  # 0.79 with these settings; texts of later checkpoints score older
    assert reward.mean_score[30] > reward.mean_score[2]
    teacher_vocab = ModelHost.load(teacher_run.final, CPU).tokenizer.get_vocab()
    assert predictor.tokenizer.get_vocab() == teacher_vocab  # the teacher's own tokenizer
    texts = ["look at the big dog !", "dog dog the the the", "", "i want my ball ."]
    scores = predictor.score(texts)
    assert len(scores) == 4 and all(math.isfinite(s) for s in scores)
    assert [predictor.score([t])[0] for t in texts] == pytest.approx(scores, abs=1e-5)  # batch does not matter


Scenario = Callable[[Student], Coroutine[Any, Any, None]]


def talk(address: str, scenario: Scenario) -> None:
    async def run() -> None:
        async with aio.insecure_channel(address) as channel:
            student = Student(channel)
            await student.hello(channel)
            await scenario(student)

    asyncio.run(run())


def word_teacher(final: Path, **teacher: Any) -> Node:
    model = {"source": str(final), "device": "cpu", "dtype": "float32"}
    return Node(teacher_settings(model=model, teacher={"tasks": ["word_learning"], "private_data": {}, **teacher}))


def test_a_teacher_node_serves_age_scores_free_of_charge(
    teacher_run: TeacherTrainReport, reward: AgePredictorReport
) -> None:
    node = word_teacher(teacher_run.final, age_predictor=str(reward.out))
    items = [("look at", "the big dog !"), ("", "dog dog the the the"), ("i want", "")]
    expected = AgePredictor.load(reward.out).score([age_text(q, t) for q, t in items])

    async def scenario(student: Student) -> None:
        ledger = node.teacher.releaser.ledger  # type: ignore[union-attr]
        before = len(ledger.events())
        request = teacher_pb2.ScoreRequest(
            task="word_learning",
            kind=teacher_pb2.SCORE_KIND_AGE,
            items=[teacher_pb2.ScoreItem(question=q, text=t) for q, t in items],
        )
        scores = list((await student.call("Score", request)).scores)
        assert scores == pytest.approx(expected, abs=1e-5)
        assert len(ledger.events()) == before  # nothing private went into R_phi: no charge
        too_long = teacher_pb2.ScoreRequest(
            task="word_learning", kind=teacher_pb2.SCORE_KIND_AGE, items=[teacher_pb2.ScoreItem(text="dog " * 600)]
        )
        with pytest.raises(aio.AioRpcError) as refused:
            await student.call("Score", too_long)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "age predictor" in str(
            refused.value.details()
        )
        demo = teacher_pb2.DemonstrateRequest(
            task="word_learning", prompts=["look at", "i want"], sampling=teacher_pb2.SamplingParams(max_new_tokens=6)
        )
        lesson = (await student.call("Demonstrate", demo)).lesson  # the final teacher's continuations
        assert [d.prompt for d in lesson.demonstrations.demonstrations] == ["look at", "i want"]

    with running_node(node) as addresses:
        talk(addresses.grpc, scenario)


def test_without_an_age_predictor_age_scores_are_refused_and_a_bad_one_stops_the_start(
    teacher_run: TeacherTrainReport, tmp_path: Path
) -> None:
    for bad, words in [
        (tmp_path / "absent", "no age predictor directory"),
        (teacher_run.final, "no age_predictor.json"),
    ]:
        with pytest.raises(ConfigError, match=r"teacher\.age_predictor") as error:
            word_teacher(teacher_run.final, age_predictor=str(bad))
        assert words in str(error.value) and str(bad) in str(error.value)
    node = word_teacher(teacher_run.final)

    async def scenario(student: Student) -> None:
        request = teacher_pb2.ScoreRequest(
            task="word_learning", kind=teacher_pb2.SCORE_KIND_AGE, items=[teacher_pb2.ScoreItem(text="look at")]
        )
        with pytest.raises(aio.AioRpcError) as refused:
            await student.call("Score", request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "age predictor" in str(refused.value.details())

    with running_node(node) as addresses:
        talk(addresses.grpc, scenario)


def test_the_cli_trains_a_teacher_and_its_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shape = ["--layers", "1", "--dim", "32", "--heads", "2", "--device", "cpu"]
    teacher = ["tnd", "train-teacher", "--out", str(tmp_path / "t"), "--steps", "12", "--corpus", "400", *shape]
    assert main([*teacher, "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "trained 12 steps" in out and "6 checkpoints (steps 2, 4, 6, 8, 10, 12)" in out
    assert [step for step, _ in teacher_checkpoints(tmp_path / "t")] == [2, 4, 6, 8, 10, 12]
    assert main(teacher) == 2
    assert "already holds a teacher run; pass --force" in capsys.readouterr().err
    reward = ["tnd", "train-reward", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "r")]
    assert main([*reward, "--contexts", "6", "--samples", "1", "--steps", "10", "--max-new-tokens", "6", *shape]) == 0
    out = capsys.readouterr().out
    assert "held-out Pearson r = " in out and "n = " in out
    assert AgePredictor.load(tmp_path / "r").score(["look at the dog ."])


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train-teacher", "--out", "{tmp}/t", "--steps", "0"], "--steps must be positive"),
        (["train-teacher", "--out", "{tmp}/t", "--sentences-per-text", "0"], "--sentences-per-text must be positive"),
        (["train-teacher", "--out", "{tmp}/t", "--dim", "30", "--heads", "4"], "heads (4) must divide dim (30)"),
        (["train-teacher", "--out", "{tmp}/t", "--device", "tpu"], "unknown device 'tpu'"),
        (["train-reward", "--teacher", "{tmp}", "--out", "{tmp}/r"], "holds no teacher checkpoints"),
        (["train-reward", "--teacher", "{tmp}", "--out", "{tmp}/r", "--samples", "0"], "--samples must be positive"),
    ],
)
def test_bad_cli_input_exits_2_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main(["tnd", *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agora tnd: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "t").exists() and not (tmp_path / "r").exists()
