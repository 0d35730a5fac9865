"""The task library: generators, gold rationales, verifiers and graders (DESIGN §5).

``get_task("arithmetic")`` returns a ready task; ``get_task("jsonl:PATH")`` wraps a user's own
``{"input", "output"}`` file. Each task lives in its own module.
"""

from __future__ import annotations

from node.tasks.arithmetic import ArithmeticTask
from node.tasks.base import SPLITS, Example, Split, Task, TaskError, Verdict
from node.tasks.jsonl_task import JsonlTask
from node.tasks.string_transforms import StringTransformTask
from node.tasks.word_learning import WordLearningTask
from node.tasks.word_sorting import WordSortingTask

BUILTIN_TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ArithmeticTask, WordSortingTask, WordLearningTask, StringTransformTask)
}
JSONL_PREFIX = "jsonl:"


def get_task(spec: str) -> Task:
    """The task named by spec: a built-in name, or ``jsonl:PATH`` for a user's own data."""
    if spec.startswith(JSONL_PREFIX):
        return JsonlTask(spec.removeprefix(JSONL_PREFIX))
    task_class = BUILTIN_TASKS.get(spec)
    if task_class is None:
        known = ", ".join([*BUILTIN_TASKS, "jsonl:PATH"])
        raise TaskError(f"unknown task {spec!r}; known tasks: {known}")
    return task_class()


__all__ = [
    "BUILTIN_TASKS",
    "SPLITS",
    "Example",
    "Split",
    "Task",
    "TaskError",
    "Verdict",
    "get_task",
]
