"""Lessons as provenance records: content ids, teacher signatures, and their checks.

A lesson's id is the lowercase hex SHA-256 of its signing bytes with lesson_id and signature
cleared, so equal content has equal id; the teacher signs the bytes with the id set (and the
signature cleared). Signing bytes are a domain tag, then protobuf's deterministic serialization
(proto/agora/v1/lesson.proto). Teachers and students both use these functions.
"""

from __future__ import annotations

import hashlib

from node.rpc.agora.v1 import lesson_pb2
from node.security.identity import NodeIdentity, node_id_of, verify_signature

LESSON_DOMAIN = b"agora.v1.Lesson\n"
KINDS = ("instruction", "examples", "demonstrations", "feedback", "questions")


class LessonError(ValueError):
    """A lesson whose id or signature does not hold."""


def _bytes(lesson: lesson_pb2.Lesson, *, keep_id: bool) -> bytes:
    copy = lesson_pb2.Lesson()
    copy.CopyFrom(lesson)
    copy.ClearField("signature")
    if not keep_id:
        copy.ClearField("lesson_id")
    return LESSON_DOMAIN + copy.SerializeToString(deterministic=True)


def lesson_id_of(lesson: lesson_pb2.Lesson) -> str:
    return hashlib.sha256(_bytes(lesson, keep_id=False)).hexdigest()


def kind_of(lesson: lesson_pb2.Lesson) -> str:
    """The lesson's kind: which body field is set ("" when none)."""
    return lesson.WhichOneof("body") or ""


def sign_lesson(lesson: lesson_pb2.Lesson, identity: NodeIdentity) -> None:
    """Set the lesson's teacher, id and signature in place."""
    lesson.teacher_node_id = identity.node_id
    lesson.lesson_id = lesson_id_of(lesson)
    lesson.signature = identity.sign(_bytes(lesson, keep_id=True))


def check_lesson(lesson: lesson_pb2.Lesson, teacher_public_key: bytes) -> None:
    """LessonError unless the lesson's id matches its content and the teacher signed it."""
    if node_id_of(teacher_public_key) != lesson.teacher_node_id:
        raise LessonError("the lesson names another teacher than the key it is checked with")
    if lesson.lesson_id != lesson_id_of(lesson):
        raise LessonError("the lesson's id does not match its content")
    if not verify_signature(teacher_public_key, _bytes(lesson, keep_id=True), lesson.signature):
        raise LessonError("the lesson's signature does not verify under its teacher's key")
