"""The task library: generators, gold rationales, verifiers and graders (DESIGN §5).

``get_task("arithmetic")`` returns a ready task; ``get_task("jsonl:PATH")`` wraps a user's own
``{"input", "output"}`` file. A built-in task that takes options reads them after its name, one
``key=values`` per colon: ``arithmetic:lengths=2,3:depths=1:unseen_lengths=4:unseen_depths=1``
(teacher and student must name the task with the same string). Every built-in task also takes
``train_pool=N``: its training questions are then drawn from N fixed ones (a finite data set, so
that more SFT cannot mean more new data). Each task lives in its own module.
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
OPTION_SEPARATOR = ":"  # between a built-in task's name and each of its key=values options
POOL_OPTION = "train_pool"  # the option every built-in task takes (Task.train_pool)


def get_task(spec: str) -> Task:
    """The task named by spec: a built-in name (with options, ``name:key=v,v:key=v``), or
    ``jsonl:PATH`` for a user's own data."""
    if spec.startswith(JSONL_PREFIX):
        return JsonlTask(spec.removeprefix(JSONL_PREFIX))
    name, *options = spec.split(OPTION_SEPARATOR)
    task_class = BUILTIN_TASKS.get(name)
    if task_class is None:
        known = ", ".join([*BUILTIN_TASKS, "jsonl:PATH"])
        raise TaskError(f"unknown task {name!r}; known tasks: {known}")
    parsed = task_options(name, (*task_class.options, POOL_OPTION), options)
    pool = parsed.pop(POOL_OPTION, None)
    task = task_class(**parsed)
    if pool is not None:
        if len(pool) != 1 or pool[0] < 1:
            raise TaskError(f"task option {POOL_OPTION} takes one whole number of at least 1, not {pool}")
        task.train_pool = pool[0]
    return task


def task_options(name: str, allowed: tuple[str, ...], options: list[str]) -> dict[str, tuple[int, ...]]:
    """``["lengths=2,3", "depths=1"]`` -> ``{"lengths": (2, 3), "depths": (1,)}``, or a TaskError sentence."""
    parsed: dict[str, tuple[int, ...]] = {}
    for option in options:
        key, equals, values = option.partition("=")
        if key not in allowed:
            takes = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
            raise TaskError(f"task {name!r} has no option {key!r}; {takes}")
        if key in parsed:
            raise TaskError(f"task option {key!r} is given twice")
        try:
            numbers = tuple(int(value) for value in values.split(","))
        except ValueError:
            numbers = ()
        if not equals or not numbers:
            raise TaskError(f"task option {option!r}: write {key}=N or {key}=N,M,... (whole numbers)")
        parsed[key] = numbers
    return parsed


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
