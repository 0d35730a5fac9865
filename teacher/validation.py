"""Request checks for every Teacher method: each failure is INVALID_ARGUMENT naming the field.

Checks run before any model work or ledger charge, so a bad request costs nothing.
"""

from __future__ import annotations

import math
import re

from node.config import TeacherSection
from node.rpc.agora.v1 import teacher_pb2
from teacher.release import invalid

MAX_TEMPERATURE = 5.0
MAX_TOP_K = 10_000
MAX_STOPS, MAX_STOP_CHARS = 16, 64
MAX_BANNED, MAX_BANNED_CHARS = 256, 64
_LESSON_ID = re.compile(r"[0-9a-f]{64}")


def task(name: str, taught: list[str]) -> None:
    if not name:
        raise invalid("task is empty; name one of the tasks this teacher teaches")
    if name not in taught:
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise invalid(f"this teacher does not teach task {shown!r}; it teaches: {', '.join(taught) or 'nothing'}")


def text(field: str, value: str, limits: TeacherSection, *, required: bool = True) -> None:
    if required and not value.strip():
        raise invalid(f"{field} is empty")
    if len(value) > limits.max_text_chars:
        raise invalid(f"{field} has {len(value)} characters; at most {limits.max_text_chars} are accepted")


def count(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise invalid(f"{field} is {value}; it must be between {low} and {high}")


def temperature(field: str, value: float, *, allow_zero: bool = True) -> None:
    if not math.isfinite(value) or value < 0 or value > MAX_TEMPERATURE or (value == 0 and not allow_zero):
        raise invalid(f"{field} is {value}; it must be a number from 0 to {MAX_TEMPERATURE}")


def instruct(request: teacher_pb2.InstructRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    count("max_tokens", request.max_tokens, 0, limits.max_new_tokens)


def exemplify(request: teacher_pb2.ExemplifyRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    count("count", request.count, 1, limits.max_examples)
    temperature("temperature", request.temperature)


def demonstrate(request: teacher_pb2.DemonstrateRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    count("the number of prompts", len(request.prompts), 1, limits.max_batch)
    for index, prompt in enumerate(request.prompts):
        text(f"prompts[{index}]", prompt, limits)
    s = request.sampling
    count("sampling.max_new_tokens", s.max_new_tokens, 0, limits.max_new_tokens)
    temperature("sampling.temperature", s.temperature)
    count("sampling.top_k", s.top_k, 0, MAX_TOP_K)
    if not math.isfinite(s.top_p) or not 0 <= s.top_p <= 1:
        raise invalid(f"sampling.top_p is {s.top_p}; it must be from 0 to 1")
    count("the number of sampling.stop strings", len(s.stop), 0, MAX_STOPS)
    for index, stop in enumerate(s.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise invalid(f"sampling.stop[{index}] must have 1 to {MAX_STOP_CHARS} characters")
    count("the number of banned_words", len(request.banned_words), 0, MAX_BANNED)
    for index, word in enumerate(request.banned_words):
        if not word.strip() or len(word) > MAX_BANNED_CHARS:
            raise invalid(f"banned_words[{index}] must have 1 to {MAX_BANNED_CHARS} characters")


def critique(request: teacher_pb2.CritiqueRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    text("question", request.question, limits)
    text("attempt", request.attempt, limits)
    if request.round > limits.max_rounds:
        raise invalid(f"round is {request.round}; this teacher critiques at most {limits.max_rounds} rounds")
    if request.previous_lesson_id and not _LESSON_ID.fullmatch(request.previous_lesson_id):
        raise invalid("previous_lesson_id must be a lesson id: 64 lowercase hex digits")


def pose(request: teacher_pb2.PoseRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    text("question", request.question, limits)
    count("num_generalized", request.num_generalized, 0, limits.max_posed)
    count("num_harder_levels", request.num_harder_levels, 0, limits.max_posed)
    count(
        "num_generalized + num_harder_levels", request.num_generalized + request.num_harder_levels, 1, limits.max_posed
    )


def score(request: teacher_pb2.ScoreRequest, limits: TeacherSection) -> None:
    task(request.task, limits.tasks)
    kinds = (teacher_pb2.SCORE_KIND_VERIFIER, teacher_pb2.SCORE_KIND_AGE, teacher_pb2.SCORE_KIND_LIKELIHOOD)
    if request.kind not in kinds:
        raise invalid(
            f"kind is {request.kind}; use SCORE_KIND_VERIFIER (1), SCORE_KIND_AGE (2) or SCORE_KIND_LIKELIHOOD (3)"
        )
    count("the number of items", len(request.items), 1, limits.max_batch)
    for index, item in enumerate(request.items):
        text(
            f"items[{index}].question", item.question, limits, required=request.kind == teacher_pb2.SCORE_KIND_VERIFIER
        )
        text(f"items[{index}].text", item.text, limits, required=False)
