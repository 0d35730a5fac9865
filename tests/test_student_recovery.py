"""Fault injection on the student's learning loop with real processes: `kill -9` of the student
mid-run then a restart (it resumes from its checkpoint, no lesson applied twice), and `kill -9`
of the teacher in use while a second one is up (the student fails over and finishes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from node.process import NodeProcess, read_log_records
from node.store import StoreError, read_rows
from student import checkpoints
from student.build import CHECKPOINT_DIR
from student.tripost import CRITIQUES_IN_FLIGHT
from tests.students import FAST_STUDENT
from tests.teachers import TINY_MODEL, teacher_settings

T = TypeVar("T")

# Child processes on one torch thread each: two nodes and a student share 2 cores.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# TriPosT in small steps (one pass over each iteration's data); iterations to spare so that a run
# ends by its steps, not by running out of iterations. checkpoint_every 3 is off TriPosT's
# iteration boundary (4 updates of 2 from 4 improved trajectories), so a kill can lose an update
# as well as freshly received lessons.
RECOVERY_STUDENT: dict[str, Any] = {
    "algorithm": "tripost",
    "checkpoint_every": 3,
    "eval_every": 100,
    "batch_size": 2,
    "eval_n": 2,
    "tripost_questions": 4,
    "tripost_iterations": 20,
    "tripost_epochs": 1.0,
}


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, alive: Callable[[], bool]) -> T:
    """The first non-None probe(); fails with `what` once the time is up or the watched process is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        if not alive():
            raise AssertionError(f"the process exited before {what}")
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout_s:g}s")


def _rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the store, or none while the node has not created it yet."""
    try:
        return read_rows(data_dir, sql)
    except StoreError:
        return []


def _teacher(tmp_path: Path, name: str, seeds: tuple[str, ...] = ()) -> NodeProcess:
    settings = teacher_settings(node={"name": name, "data_dir": str(tmp_path / name)}, peers={"seeds": list(seeds)})
    document = settings.model_dump(mode="json")
    document["node"]["listen"] = "127.0.0.1:0"
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(document))
    return NodeProcess(["--config", str(config)], log_path=tmp_path / f"{name}.log", env=CHILD_ENV)


def _student_config(tmp_path: Path, seeds: list[str], peers: dict[str, Any], **student: object) -> Path:
    document = {
        "node": {
            "name": "learner",
            "data_dir": str(tmp_path / "learner"),
            "roles": ["student"],
            "listen": "127.0.0.1:0",
            "drain_notice_s": 0.0,
        },
        "model": TINY_MODEL,
        "peers": {"seeds": seeds, **peers},
        "metrics": {"listen": "127.0.0.1:0"},
        "student": {**FAST_STUDENT, **student},
        "security": {"insecure": True},
    }
    path = tmp_path / "learner.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class StudentProcess:
    """One `agora learn` child process logging JSON lines to its own file."""

    def __init__(self, config: Path, log: Path) -> None:
        command = [sys.executable, "-m", "node.cli", "learn", "--config", str(config), "--log-format", "json"]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **CHILD_ENV}
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the student did not finish within {timeout_s:g}s:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in read_log_records(self.log) if r.get("event") == event]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def _cleanup(processes: list[NodeProcess | StudentProcess]) -> Iterator[None]:
    """SIGKILL whatever is still running when the test ends, passed or failed."""
    try:
        yield
    finally:
        for process in processes:
            process.kill()


def _latest_queue(root: Path) -> tuple[int, set[str]] | None:
    """The newest checkpoint's step and the lessons its learner queue holds (received, not applied)."""
    newest = checkpoints.latest(root)
    if newest is None:
        return None
    try:
        state = newest.state()
    except OSError:  # pruned under our feet by a newer checkpoint
        return None
    return newest.step, {lesson for item in state["learner"]["queue"] for lesson in item["lessons"]}


def _used(data_dir: Path) -> dict[str, tuple[int, str]]:
    """lesson_id -> (applied_step, outcome) of every lesson an update applied or set aside."""
    rows = _rows(
        data_dir, "SELECT lesson_id, applied_step, outcome FROM received_lessons WHERE applied_step IS NOT NULL"
    )
    return {lesson: (step, outcome) for lesson, step, outcome in rows}


def _received(data_dir: Path) -> set[str]:
    return {lesson for (lesson,) in _rows(data_dir, "SELECT lesson_id FROM received_lessons")}


def _done(data_dir: Path) -> int:
    return max((step for (step,) in _rows(data_dir, "SELECT step FROM updates")), default=0)


def test_kill_9_of_the_student_resumes_from_its_checkpoint_and_applies_no_lesson_twice(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path, "teacher")
    processes: list[NodeProcess | StudentProcess] = [teacher]
    with _cleanup(processes):
        address = teacher.start().address
        data = tmp_path / "learner"
        root = data / CHECKPOINT_DIR
        config = _student_config(
            tmp_path,
            [address],
            {},
            **RECOVERY_STUDENT,
            steps=8,
        )
        first = StudentProcess(config, tmp_path / "learner-1.log")
        processes.append(first)

        def collecting_past_a_checkpoint() -> bool | None:
            # An update the newest checkpoint (step >= 2) does not hold, and lessons received since
            # it: a TriPosT collection in progress, which takes many sequential Critique calls.
            latest = _latest_queue(root)
            if latest is None or latest[0] < 2:
                return None
            step, queued = latest
            done = _done(data)
            since = _received(data) - set(_used(data)) - queued
            return True if step < done < 8 and since else None

        _wait_for("a collection after the checkpoint of step 3", collecting_past_a_checkpoint, 60, first.alive)
        first.kill()
        assert first.process.returncode == -9, f"the student finished before it was killed:\n{first.tail()}"

        # What the crash left on disk.
        latest = _latest_queue(root)
        assert latest is not None
        checkpoint, queued_at_checkpoint = latest
        used = _used(data)
        done = _done(data)
        kept = {lesson: use for lesson, use in used.items() if use[0] <= checkpoint}
        lost = {lesson: use for lesson, use in used.items() if use[0] > checkpoint}
        since = _received(data) - set(kept) - queued_at_checkpoint
        assert 2 <= checkpoint < done < 8 and lost and since - set(lost), (checkpoint, done, lost, since)

        second = StudentProcess(config, tmp_path / "learner-2.log")
        processes.append(second)
        assert second.wait(90) == 0, second.tail()
        resumed = second.records("student_resumed")
        assert [(r["step"], r["rewound"]) for r in resumed] == [(checkpoint, len(lost))], second.tail()

        # The lineage: updates 1..8 once each, and every lesson used by exactly one of them.
        updates = read_rows(data, "SELECT step, lessons FROM updates ORDER BY step")
        assert [step for step, _ in updates] == list(range(1, 9))
        used_after = _used(data)
        applied_per_step = {step: sum(use == (step, "applied") for use in used_after.values()) for step, _ in updates}
        assert applied_per_step == dict(updates), "an update's lesson count differs from the lessons marked with it"
        # What the checkpoint held is untouched, and the lost updates were made again with the same lessons.
        assert {lesson: used_after.get(lesson) for lesson in kept} == kept
        assert {lesson: used_after.get(lesson) for lesson in lost} == lost
        # The lessons received since the checkpoint were taken from the provenance table, not asked again.
        summary = next(line for line in second.log.read_text().splitlines() if line.startswith("lessons: "))
        assert f"this run: {len(since)} replayed after a crash" in summary, summary
        # None is lost either: each lesson is applied, set aside, or still queued in the final checkpoint.
        final = _latest_queue(root)
        assert final is not None and final[0] == 8
        unused = _received(data) - set(used_after)
        assert unused == final[1], f"received lessons neither used nor queued: {sorted(unused - final[1])}"
        # The teacher sent every lesson the student holds, and at most the replies in flight at the
        # kill: TriPosT asks an iteration's critiques at once (one per question, up to its limit).
        # Anything else would be a lesson asked for twice.
        student_id = next(str(r["node_id"]) for r in read_log_records(first.log) if r.get("event") == "node_started")
        assert teacher.terminate() == 0
        sent = {
            lesson
            for (lesson,) in read_rows(
                tmp_path / "teacher", "SELECT lesson_id FROM lessons WHERE recipient = ?", (student_id,)
            )
        }
        received = _received(data)
        in_flight = min(int(RECOVERY_STUDENT["tripost_questions"]), CRITIQUES_IN_FLIGHT)
        assert received <= sent and len(sent - received) <= in_flight, (len(sent), len(received))


def _unix_ms(ts: str) -> int:
    """A JSON log line's `ts` (UTC, milliseconds) as Unix milliseconds, as received_lessons stores times."""
    return round(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000)


def test_kill_9_of_the_teacher_in_use_fails_over_to_the_other_and_finishes(tmp_path: Path) -> None:
    first_teacher = _teacher(tmp_path, "teacher-a")
    processes: list[NodeProcess | StudentProcess] = [first_teacher]
    with _cleanup(processes):
        first_address = first_teacher.start().address
        second_teacher = _teacher(tmp_path, "teacher-b", seeds=(first_address,))
        processes.append(second_teacher)
        second_address = second_teacher.start().address
        names = {first_teacher.node_id(): "teacher-a", second_teacher.node_id(): "teacher-b"}
        data = tmp_path / "learner"
        # Fast membership, so the dead teacher leaves the student's view quickly; a long enough
        # teacher wait that backing off never ends the run.
        peers = {"ping_interval_s": 0.5, "gossip_interval_s": 0.5, "dead_after_s": 3.0, "forget_after_s": 30.0}
        config = _student_config(
            tmp_path,
            [first_address, second_address],
            peers,
            **RECOVERY_STUDENT,
            steps=6,
            teacher_wait_s=60.0,
            lesson_timeout_s=30.0,
        )
        student = StudentProcess(config, tmp_path / "learner.log")
        processes.append(student)

        def teacher_in_use() -> str | None:
            rows = _rows(data, "SELECT teacher FROM received_lessons ORDER BY at_unix_ms DESC LIMIT 1")
            return str(rows[0][0]) if rows else None

        killed = _wait_for("a first lesson", teacher_in_use, 60, student.alive)
        assert killed in names, f"a lesson from an unknown teacher {killed}"
        victim, survivor = (
            (first_teacher, second_teacher) if killed == first_teacher.node_id() else (second_teacher, first_teacher)
        )
        victim.kill()
        assert student.wait(90) == 0, student.tail()

        failovers = [r for r in student.records("teacher_failover") if r["teacher"] == killed]
        assert failovers, f"no teacher_failover for the killed {names[killed]}:\n{student.tail()}"
        failed_over_at = _unix_ms(str(failovers[0]["ts"]))
        lessons = read_rows(data, "SELECT teacher, at_unix_ms FROM received_lessons")
        # TriPosT asks one lesson at a time: whatever the dead teacher gave came before the failed
        # call, and everything after it came from the survivor.
        assert all(at <= failed_over_at for teacher, at in lessons if teacher == killed)
        after = [teacher for teacher, at in lessons if at > failed_over_at]
        assert after and set(after) == {survivor.node_id()}, (names[killed], after)
        assert [step for (step,) in read_rows(data, "SELECT step FROM updates ORDER BY step")] == list(range(1, 7))
        assert survivor.terminate() == 0
