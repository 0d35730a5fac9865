"""The Teacher gRPC service: six ways to share knowledge without sharing data.

Calls arrive authenticated (node.security.auth), so the envelope's sender is the verified
student: the recipient whose sub-budget a release is charged to. Each method validates its
request, makes its lesson under one `Release` (charge, guard, signature) and answers with a
status and a sentence on every failure: never a traceback (a bug answers INTERNAL with a
reference id, from node/interceptors.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from grpc import aio

from node.rpc.agora.v1 import teacher_pb2, teacher_pb2_grpc
from teacher import interactive, validation, verbal
from teacher.core import TeacherCore
from teacher.release import Draft, Release, RequestError

if TYPE_CHECKING:
    Context = aio.ServicerContext[Any, Any]

Req = TypeVar("Req", bound=Message)
R = TypeVar("R")


class TeacherService(teacher_pb2_grpc.TeacherServicer):
    def __init__(self, core: TeacherCore) -> None:
        self.core = core

    async def _serve(
        self,
        method: str,
        request: Req,
        context: Context,
        check: Callable[[Req, Any], None],
        make: Callable[[TeacherCore, Req, Release], Awaitable[R]],
    ) -> R:
        release = self.core.releaser.release(request.envelope.sender_node_id)  # type: ignore[attr-defined]
        try:
            check(request, self.core.settings.teacher)
            return await make(self.core, request, release)
        except RequestError as exc:
            await context.abort(exc.code, exc.sentence)
        except Exception:
            release.fail()  # the charge stays; the server's interceptor logs the crash and answers INTERNAL
            raise
        raise AssertionError("unreachable: abort raises")

    async def _lesson(
        self,
        method: str,
        request: Req,
        context: Context,
        check: Callable[[Req, Any], None],
        make: Callable[[TeacherCore, Req, Release], Awaitable[Draft]],
    ) -> teacher_pb2.LessonReply:
        async def make_and_finish(core: TeacherCore, req: Req, release: Release) -> teacher_pb2.LessonReply:
            draft = await make(core, req, release)
            return teacher_pb2.LessonReply(lesson=await release.finish(draft, core.model_info))

        return await self._serve(method, request, context, check, make_and_finish)

    async def Instruct(self, request: teacher_pb2.InstructRequest, context: Context) -> teacher_pb2.LessonReply:
        return await self._lesson("Instruct", request, context, validation.instruct, verbal.instruct)

    async def Exemplify(self, request: teacher_pb2.ExemplifyRequest, context: Context) -> teacher_pb2.LessonReply:
        return await self._lesson("Exemplify", request, context, validation.exemplify, verbal.exemplify)

    async def Demonstrate(self, request: teacher_pb2.DemonstrateRequest, context: Context) -> teacher_pb2.LessonReply:
        return await self._lesson("Demonstrate", request, context, validation.demonstrate, interactive.demonstrate)

    async def Critique(self, request: teacher_pb2.CritiqueRequest, context: Context) -> teacher_pb2.LessonReply:
        return await self._lesson("Critique", request, context, validation.critique, interactive.critique)

    async def Pose(self, request: teacher_pb2.PoseRequest, context: Context) -> teacher_pb2.LessonReply:
        return await self._lesson("Pose", request, context, validation.pose, interactive.pose)

    async def Score(self, request: teacher_pb2.ScoreRequest, context: Context) -> teacher_pb2.ScoreReply:
        async def make(core: TeacherCore, req: teacher_pb2.ScoreRequest, release: Release) -> teacher_pb2.ScoreReply:
            return teacher_pb2.ScoreReply(scores=await interactive.score(core, req, release))

        return await self._serve("Score", request, context, validation.score, make)
