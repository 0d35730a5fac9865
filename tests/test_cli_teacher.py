"""`agora teacher dp-train` and `agora privacy` from the command line, on real files: the DP-SGD
run is charged to the ledger before it trains, the model it writes serves lessons that say
"dp_sgd", and the ledger prints with its composed total."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from grpc import aio

from node.app import Node
from node.cli import main
from node.config import Settings
from node.llm.checkpoint import METADATA_FILE
from node.privacy.accounting import dp_sgd_charge, epsilon_of
from node.privacy.ledger import read_ledger
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from tests.nodes import running_node
from tests.teachers import TINY_MODEL, Student, write_private


def write_config(tmp_path: Path, **privacy: object) -> tuple[Path, Settings]:
    document = {
        "node": {"name": "teach", "data_dir": str(tmp_path / "data"), "roles": ["teacher"]},
        "model": TINY_MODEL,
        "teacher": {
            "tasks": ["arithmetic"],
            "private_data": {"arithmetic": str(write_private(tmp_path, "arithmetic", 40))},
        },
        "privacy": {"epsilon_budget": 5.0, **privacy},
        "security": {"insecure": True},
    }
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, Settings.model_validate(document)


def test_dp_train_charges_the_ledger_once_and_writes_a_dp_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = write_config(tmp_path)
    out = tmp_path / "dp-model"
    code = main(["teacher", "dp-train", "--config", str(config), "--task", "arithmetic", "--noise-multiplier", "1.5",
                 "--batch", "8", "--epochs", "1", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = read_ledger(settings.node.data_dir, 5.0, settings.privacy.delta)
    [event] = summary.events
    assert event.charge.mechanism == "dp_sgd" and event.status == "released" and event.recipient == ""
    p = event.charge.parameters
    assert p["noise_multiplier"] == 1.5 and p["sample_rate"] == pytest.approx(8 / 40) and p["steps"] == 5
    assert event.epsilon == pytest.approx(epsilon_of(dp_sgd_charge(1.5, 0.2, 5, 1.0), settings.privacy.delta))
    assert summary.spent == pytest.approx(event.epsilon)
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["extra"]["dp_sgd"]["noise_multiplier"] == 1.5

    # A teacher serving the DP-trained model says so in its lessons, and they cost nothing more.
    served = settings.model_copy(deep=True)
    served.model.source = str(out)
    served.node.listen, served.metrics.listen = "127.0.0.1:0", "127.0.0.1:0"
    node = Node(served)

    async def demonstrate(address: str) -> lesson_pb2.Lesson:
        async with aio.insecure_channel(address) as channel:
            student = Student(channel)
            await student.hello(channel)
            request = teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=["Q: (1 + 2) =\nAnswer: "])
            reply = await student.call("Demonstrate", request)
            return reply.lesson  # type: ignore[no-any-return]

    with running_node(node) as addresses:
        lesson = asyncio.run(demonstrate(addresses.grpc))
        assert lesson.privacy.mechanism == "dp_sgd" and lesson.privacy.epsilon_charged == 0
        assert len(node.teacher.releaser.ledger.events()) == 1  # type: ignore[union-attr]

    assert main(["privacy", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert f"epsilon spent {summary.spent:.4f} of 5" in table and "dp_sgd" in table and "released" in table
    assert main(["privacy", "--config", str(config), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["epsilon_left"] == pytest.approx(5.0 - summary.spent) and len(document["events"]) == 1


def test_dp_train_past_the_budget_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = write_config(tmp_path, epsilon_budget=0.5)
    out = tmp_path / "never"
    code = main(["teacher", "dp-train", "--config", str(config), "--task", "arithmetic", "--noise-multiplier", "0.7",
                 "--epochs", "3", "--out", str(out)])  # fmt: skip
    assert code == 1 and "privacy budget is exhausted" in capsys.readouterr().err
    assert not out.exists() and read_ledger(settings.node.data_dir, 0.5, settings.privacy.delta).events == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--task", "word_sorting", "--epsilon", "1"], "no file for task 'word_sorting'"),
        (["--task", "arithmetic", "--epsilon", "-1"], "epsilon"),
    ],
)
def test_dp_train_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    config, _ = write_config(tmp_path)
    assert main(["teacher", "dp-train", "--config", str(config), "--out", str(tmp_path / "m"), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_privacy_on_a_node_that_never_ran_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = write_config(tmp_path)
    assert main(["privacy", "--config", str(config)]) == 2
    assert "no store" in capsys.readouterr().err
