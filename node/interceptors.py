"""Server interceptors: RPC metrics, the guard that turns a handler's crash into INTERNAL, and
the sentence for calls to methods the node does not serve.

Metrics and the guard wrap every method handler (all four streaming shapes) in an async context
manager around the call, so each concern is a few lines and the wrapping is written once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from node.metrics import NodeMetrics

log = logging.getLogger("agora.server")

if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    Context = aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    # Code run around one call, given its request (an iterator for streaming requests).
    Around = Callable[[Any, Context], AbstractAsyncContextManager[None]]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
    _ServerInterceptor = aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = aio.ServerInterceptor


def split_method(full_method: str) -> tuple[str, str]:
    """'/agora.v1.Teacher/Instruct' -> ('agora.v1.Teacher', 'Instruct')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _wrap_behavior(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(request, context):
                async for response in behavior(request, context):
                    yield response

        return stream

    async def call(request: Any, context: Context) -> Any:
        async with around(request, context):
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

    return call


def replace_handler(handler: Handler, **fields: Any) -> Handler:
    """A copy of the handler (a namedtuple at run time) with some fields replaced."""
    return handler._replace(**fields)  # type: ignore[attr-defined, no-any-return]


def wrap_handler(handler: Handler, around: Around) -> Handler:
    """The same handler with every call run inside ``around(request, context)``."""
    for shape in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, shape)
        if behavior is not None:
            return replace_handler(handler, **{shape: _wrap_behavior(behavior, around)})
    return handler


class WrappingInterceptor(_ServerInterceptor):
    """Base for interceptors that run code around every call of the methods the node serves."""

    def around(self, method: str) -> Around:
        raise NotImplementedError

    async def intercept_service(  # type: ignore[override]  # None = "no such method", as grpc expects
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, self.around(handler_call_details.method))


class MetricsInterceptor(WrappingInterceptor):
    """Counts calls by final status and times them (agora_rpc_requests_total, _duration_seconds)."""

    def __init__(self, metrics: NodeMetrics, known_methods: set[str]) -> None:
        self._metrics = metrics
        self._known = known_methods  # full paths, "/agora.v1.Teacher/Instruct"

    def around(self, method: str) -> Around:
        # Only methods the node serves get their own labels: callers cannot grow the registry.
        service, name = split_method(method) if method in self._known else ("unknown", "unknown")
        metrics = self._metrics

        @asynccontextmanager
        async def observed(request: Any, context: Context) -> AsyncIterator[None]:
            started = time.perf_counter()
            metrics.rpc_in_flight.inc()
            metrics.in_flight += 1
            cancelled = False
            try:
                yield
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                metrics.rpc_in_flight.dec()
                metrics.in_flight -= 1
                code = "CANCELLED" if cancelled else _status_name(context.code())
                metrics.rpc_requests.labels(service=service, method=name, code=code).inc()
                metrics.rpc_duration.labels(service=service, method=name).observe(time.perf_counter() - started)

        return observed


def _status_name(code: grpc.StatusCode | None) -> str:
    """The call's final status: what the handler set or aborted with, else OK."""
    return "OK" if code is None else code.name


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message of the method's type."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode_or_mark(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # DecodeError and friends: the caller sent bad bytes
            return _Undecodable(str(exc) or type(exc).__name__)

    return decode_or_mark


class ErrorGuardInterceptor(WrappingInterceptor):
    """Bad bytes become INVALID_ARGUMENT; an unexpected exception in a handler becomes INTERNAL;
    a reply over the message limit becomes RESOURCE_EXHAUSTED before it is sent.

    Without this, grpc answers the first two with UNKNOWN and the Python exception's class, and
    the third fails after the handler returned, where metrics would have counted it OK. The
    traceback goes to the node's log under a reference id that the sentence repeats, so an
    operator can find it; the caller never sees Python internals, and the server keeps serving.
    """

    def __init__(self, max_reply_bytes: int) -> None:
        self._max_reply_bytes = max_reply_bytes

    async def intercept_service(  # type: ignore[override]  # None = "no such method", as grpc expects
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await super().intercept_service(continuation, handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            size_checked = self._size_checked(handler.unary_unary, handler_call_details.method)
            handler = replace_handler(handler, unary_unary=size_checked)
        if handler.request_deserializer is None or handler.request_streaming:
            return handler
        return replace_handler(handler, request_deserializer=_tolerant(handler.request_deserializer))

    def _size_checked(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        limit = self._max_reply_bytes

        async def call(request: Any, context: Context) -> Any:
            reply = await behavior(request, context)
            size = reply.ByteSize() if hasattr(reply, "ByteSize") else len(reply) if isinstance(reply, bytes) else 0
            if size > limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the reply to {method.lstrip('/')} would be {size} bytes, over this node's limit of "
                    f"{limit} (node.max_message_bytes)",
                )
            return reply

        return call

    def around(self, method: str) -> Around:
        @asynccontextmanager
        async def guarded(request: Any, context: Context) -> AsyncIterator[None]:
            if isinstance(request, _Undecodable):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"malformed request to {method.lstrip('/')}: {request.problem}"
                )
            try:
                yield
            except (aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                reference = uuid.uuid4().hex[:12]
                log.exception("unexpected error in %s (ref %s)", method, reference)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error while serving {method.lstrip('/')}; the node logged it under ref {reference}",
                )

        return guarded


class UnknownMethodInterceptor(_ServerInterceptor):
    """Answers calls to methods this node does not serve with UNIMPLEMENTED and a sentence.

    It sits innermost, so that the handler it makes for such calls is wrapped by the others and
    counted (under service="unknown").
    """

    def __init__(self, services: list[str]) -> None:
        self._services = ", ".join(sorted(services))

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is not None:
            return handler
        message = f"{handler_call_details.method.lstrip('/')} is not a method of this node; it serves {self._services}"

        async def unimplemented(request: bytes, context: Context) -> bytes:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return grpc.unary_unary_rpc_method_handler(unimplemented)
