"""`agora model init | train | eval` and `agora task list | sample`, run as a user would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from node.llm import ModelHost
from node.llm.checkpoint import METADATA_FILE
from node.tasks import BUILTIN_TASKS

TINY = ["--layers", "2", "--dim", "48", "--heads", "4", "--max-positions", "1024"]


def test_init_train_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "teacher"
    assert main(["model", "init", "--task", "arithmetic", "--family", "llama", *TINY, "--out", str(out)]) == 0
    built = capsys.readouterr().out
    assert "built llama model: 2 layers, dim 48" in built and "char-level vocabulary for task arithmetic" in built
    assert (out / "config.json").is_file() and (out / METADATA_FILE).is_file()

    assert main(["model", "init", "--task", "arithmetic", *TINY, "--out", str(out)]) == 2
    assert "already holds a model; pass --force" in capsys.readouterr().err

    args = ["model", "train", "--task", "arithmetic", "--out", str(out), "--steps", "6", "--batch-size", "4"]
    assert main([*args, "--eval-every", "3", "--eval-n", "2", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "trained 6 steps" in captured.out and f"-> {out}" in captured.out
    assert "step 3: train loss" in captured.err  # the periodic held-out check
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["train_steps"] == 6 and metadata["extra"]["train"]["steps"] == 6
    assert set(metadata["extra"]["eval"]) >= {"step", "seen", "unseen", "seen_loss"}

    assert main(["model", "eval", "--task", "arithmetic", "--model", str(out), "--n", "2", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["accuracy"]) == {"train", "seen", "unseen"}
    assert all(0.0 <= value <= 1.0 for value in result["accuracy"].values())

    assert main(["model", "eval", "--task", "arithmetic", "--model", str(out), "--n", "2", "--splits", "seen"]) == 0
    assert "seen" in capsys.readouterr().out


def test_train_builds_a_new_model_when_out_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fresh"
    args = ["model", "train", "--task", "string_transforms", "--out", str(out), "--steps", "2", "--batch-size", "2"]
    assert main([*args, "--eval-every", "0", "--eval-n", "1", "--family", "gpt2", *TINY]) == 0
    assert "training a new tiny model" in capsys.readouterr().err
    host = ModelHost.load(out)
    assert host.metadata.task == "string_transforms" and host.model.config.model_type == "gpt2"


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["model", "init", "--task", "chess", "--out", str(tmp_path / "x")], "unknown task 'chess'; known tasks:"),
        (
            ["model", "init", "--task", "arithmetic", "--dim", "50", "--heads", "4", "--out", str(tmp_path / "x")],
            "heads (4) must divide dim (50)",
        ),
        (["model", "eval", "--task", "arithmetic", "--model", str(tmp_path / "missing")], "no model directory at"),
        (
            ["model", "train", "--task", "arithmetic", "--out", str(tmp_path / "x"), "--steps", "0"],
            "--steps must be positive",
        ),
        (["model", "eval", "--task", "arithmetic", "--model", str(tmp_path), "--splits", "dev"], "--splits takes"),
        (["model", "train", "--task", "arithmetic", "--out", str(tmp_path / "x"), "--device", "cuda:7"], "cuda:7"),
        (["task", "sample", "jsonl:" + str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_a_model_is_refused_for_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sorter"
    assert main(["model", "init", "--task", "word_sorting", *TINY, "--out", str(out)]) == 0
    assert main(["model", "train", "--task", "arithmetic", "--out", str(out), "--steps", "1"]) == 2
    assert "was built for task 'word_sorting'" in capsys.readouterr().err


def test_task_list_and_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["task", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BUILTIN_TASKS) and "jsonl:PATH" in listed

    assert main(["task", "sample", "arithmetic", "-n", "3", "--split", "unseen"]) == 0
    text = capsys.readouterr().out
    assert text.count("--- arithmetic unseen #") == 3 and text.count("(Final response) So the answer is") == 3

    assert main(["task", "sample", "word_sorting", "-n", "2", "--format", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(r["split"] == "train" and r["answer"] in r["rationale"] for r in records)


def test_jsonl_task_from_a_users_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "capitals.jsonl"
    data.write_text("\n".join(json.dumps({"input": f"capital of {c}?", "output": c.upper()}) for c in "abcdefgh"))
    assert main(["task", "sample", f"jsonl:{data}", "-n", "2"]) == 0
    assert "So the answer is" in capsys.readouterr().out
    data.write_text('{"input": "x", "output": "y"}\nnot json\n')
    assert main(["task", "sample", f"jsonl:{data}"]) == 2
    assert "line 2" in capsys.readouterr().err


def test_ctrl_c_saves_the_model_before_exiting(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "node.cli", "model", "train", "--task", "arithmetic", "--out", str(out)]
    command += ["--steps", "100000", "--batch-size", "2", "--eval-every", "2", "--eval-n", "1", *TINY]
    # A shell starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give the child the default disposition, as a terminal's foreground process has.
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    assert process.stderr is not None
    for line in process.stderr:  # wait until training is under way (the first held-out check)
        if line.startswith("step 2: train loss"):
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert f"saved to {out}" in rest and "Traceback" not in rest
    assert json.loads((out / METADATA_FILE).read_text())["train_steps"] >= 2
