"""The node's gRPC server, end to end: real grpc.aio servers on loopback port 0, real clients.

Faults are injected by subclassing the real parts: ``ScriptedNode`` is a ``Node`` whose
``services()`` serves ``ScriptedTeacher``, a ``TeacherServicer`` whose ``Demonstrate`` crashes or
sleeps when its first prompt says so. Agora calls are signed by a ``SignedCaller`` that said
Hello first, as every peer must. Async scenarios run under ``asyncio.run`` inside plain test
functions.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node import __version__
from node.app import Node
from node.client import HealthResult, check_health
from node.config import ConfigError, Settings, load_settings
from node.rpc.agora.v1 import lesson_pb2, peer_pb2, teacher_pb2, teacher_pb2_grpc
from node.security import channel_credentials
from node.server import ServiceBinding
from tests.certs import CertificateAuthority
from tests.nodes import SignedCaller, eventually, loopback_settings

TEACHER = "agora.v1.Teacher"
PEER = "agora.v1.Peer"
HEALTH = "grpc.health.v1.Health"
SECRET = "secret detail"
Context = aio.ServicerContext[Any, Any]

# --- settings and nodes ---------------------------------------------------------------------


class ScriptedTeacher(teacher_pb2_grpc.TeacherServicer):
    """A Teacher whose Demonstrate does what its first prompt says.

    ``"crash"`` raises ``ValueError("secret detail")``; ``"sleep <seconds>"`` sleeps that long,
    then answers; anything else answers at once. The answer demonstrates every prompt with the
    continuation ``" ok"``. The other methods are not scripted and abort with UNIMPLEMENTED.
    """

    async def Demonstrate(self, request: teacher_pb2.DemonstrateRequest, context: Context) -> teacher_pb2.LessonReply:
        command = request.prompts[0] if request.prompts else ""
        if command == "crash":
            raise ValueError(SECRET)
        if command.startswith("sleep "):
            await asyncio.sleep(float(command.removeprefix("sleep ")))
        demonstrations = [lesson_pb2.Demonstration(prompt=p, continuation=" ok") for p in request.prompts]
        lesson = lesson_pb2.Lesson(
            task=request.task, demonstrations=lesson_pb2.DemonstrationSet(demonstrations=demonstrations)
        )
        return teacher_pb2.LessonReply(lesson=lesson)

    async def Instruct(self, request: teacher_pb2.InstructRequest, context: Context) -> teacher_pb2.LessonReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def Exemplify(self, request: teacher_pb2.ExemplifyRequest, context: Context) -> teacher_pb2.LessonReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def Critique(self, request: teacher_pb2.CritiqueRequest, context: Context) -> teacher_pb2.LessonReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def Pose(self, request: teacher_pb2.PoseRequest, context: Context) -> teacher_pb2.LessonReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def Score(self, request: teacher_pb2.ScoreRequest, context: Context) -> teacher_pb2.ScoreReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


class ScriptedNode(Node):
    """A node serving ScriptedTeacher as agora.v1.Teacher (and the real Peer service)."""

    def teacher_service(self) -> ServiceBinding:
        teacher = ScriptedTeacher()
        return ServiceBinding(TEACHER, lambda server: teacher_pb2_grpc.add_TeacherServicer_to_server(teacher, server))


@asynccontextmanager
async def running(node: Node) -> AsyncIterator[str]:
    """Start ``node``, yield its gRPC address, stop it on the way out."""
    addresses = await node.start()
    try:
        yield addresses.grpc
    finally:
        await node.stop()


@asynccontextmanager
async def connected(node: Node) -> AsyncIterator[tuple[aio.Channel, SignedCaller]]:
    """Start ``node``; yield a channel to it and a caller that has said Hello."""
    async with running(node) as address, aio.insecure_channel(address) as channel:
        caller = SignedCaller()
        await caller.hello(channel)
        yield channel, caller


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async scenario on a fresh event loop (pytest-asyncio is not used)."""
    asyncio.run(scenario())


# --- client helpers -------------------------------------------------------------------------


DEMONSTRATE = "/agora.v1.Teacher/Demonstrate"


def demonstrate_request(caller: SignedCaller, *prompts: str) -> teacher_pb2.DemonstrateRequest:
    return caller.sealed(teacher_pb2.DemonstrateRequest(task="arithmetic", prompts=list(prompts)), DEMONSTRATE)


async def demonstrate(
    channel: aio.Channel, caller: SignedCaller, *prompts: str, deadline_s: float = 10
) -> teacher_pb2.LessonReply:
    request = demonstrate_request(caller, *prompts)
    return await teacher_pb2_grpc.TeacherStub(channel).Demonstrate(request, timeout=deadline_s)


async def health(channel: aio.Channel, service: str = "") -> str:
    """The health status name the node reports for ``service``."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def rpc_error(call: Awaitable[object]) -> aio.AioRpcError:
    """The error a call ends with; fails the test if it succeeds."""
    try:
        await call
    except aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def requests_total(node: Node, service: str, method: str, code: str) -> float:
    """agora_rpc_requests_total{service, method, code} in ``node``'s own registry (0 if absent)."""
    labels = {"service": service, "method": method, "code": code}
    return node.metrics.registry.get_sample_value("agora_rpc_requests_total", labels) or 0.0


def in_flight(node: Node) -> float:
    return node.metrics.registry.get_sample_value("agora_rpc_in_flight") or 0.0


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read()).decode()


# --- 1. a crashing handler ------------------------------------------------------------------


def test_handler_crash_becomes_short_internal_error_and_node_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    """A handler raising ValueError gives the caller INTERNAL with a short sentence and a ref id,
    never the exception's text or a traceback; the traceback is logged under that ref, the call
    is counted as INTERNAL, and the node goes on serving."""
    caplog.set_level(logging.ERROR, logger="agora.server")
    node = ScriptedNode(loopback_settings())

    async def scenario() -> None:
        async with connected(node) as (channel, caller):
            error = await rpc_error(demonstrate(channel, caller, "crash"))
            assert error.code() == grpc.StatusCode.INTERNAL
            details = error.details() or ""
            assert "internal error" in details
            match = re.search(r"\bref ([0-9a-f]{12})\b", details)
            assert match is not None, details
            for leak in (SECRET, "Traceback", "ValueError"):
                assert leak not in details
            assert "\n" not in details and len(details) < 200

            assert await health(channel) == "SERVING"
            reply = await demonstrate(channel, caller, "after the crash")
            assert [d.prompt for d in reply.lesson.demonstrations.demonstrations] == ["after the crash"]

            await eventually(lambda: requests_total(node, TEACHER, "Demonstrate", "INTERNAL") == 1)
            assert requests_total(node, TEACHER, "Demonstrate", "OK") == 1

        logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
        assert len(logged) == 1
        assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], ValueError)
        assert SECRET in str(logged[0].exc_info[1])

    run(scenario)


# --- 2. methods the node does not serve -----------------------------------------------------


def agora_methods() -> list[tuple[ServiceDescriptor, str]]:
    services = [peer_pb2.DESCRIPTOR.services_by_name["Peer"], teacher_pb2.DESCRIPTOR.services_by_name["Teacher"]]
    return [(service, method.name) for service in services for method in service.methods]


def test_every_teacher_method_answers_unimplemented_on_a_node_that_teaches_nothing() -> None:
    """On a Node with no teacher.tasks every agora.v1.Teacher method answers a signed caller
    UNIMPLEMENTED with a sentence naming the method and why, counted under its service and method."""
    node = Node(loopback_settings())
    methods = [(s, m) for s, m in agora_methods() if s.full_name == TEACHER]
    assert len(methods) == 6

    async def scenario() -> None:
        async with connected(node) as (channel, caller):
            for service, method in methods:
                path = f"/{service.full_name}/{method}"
                request_type = GetMessageClass(service.FindMethodByName(method).input_type)
                call = channel.unary_unary(path, request_type.SerializeToString, None)
                error = await rpc_error(call(caller.sealed(request_type(), path), timeout=5))
                assert error.code() == grpc.StatusCode.UNIMPLEMENTED, (method, error)
                assert f"{service.full_name}/{method}: this node teaches nothing" in (error.details() or "")
            await eventually(
                lambda: all(requests_total(node, s.full_name, m, "UNIMPLEMENTED") == 1 for s, m in methods)
            )

    run(scenario)


def test_every_agora_method_refuses_an_unsigned_call() -> None:
    """Every agora.v1 method, built or not, answers a request without a signed envelope
    UNAUTHENTICATED with a sentence, and counts it in agora_auth_rejections_total."""
    node = Node(loopback_settings())
    methods = agora_methods()
    assert {service.full_name for service, _ in methods} == {PEER, TEACHER}

    async def scenario() -> None:
        async with running(node) as address, aio.insecure_channel(address) as channel:
            for service, method in methods:
                call = channel.unary_unary(f"/{service.full_name}/{method}", None, None)
                error = await rpc_error(call(b"", timeout=5))  # b"" is an empty request message
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (method, error)
                assert "needs a signed envelope" in (error.details() or "")
        rejected = node.metrics.registry.get_sample_value("agora_auth_rejections_total", {"reason": "missing_envelope"})
        assert rejected == len(methods)

    run(scenario)


def test_unknown_method_answers_unimplemented_naming_served_services() -> None:
    """A call to a method no service of the node has answers UNIMPLEMENTED with a sentence
    naming the method and the services the node serves; it is counted as service="unknown"."""
    node = Node(loopback_settings())

    async def scenario() -> None:
        async with running(node) as address, aio.insecure_channel(address) as channel:
            error = await rpc_error(channel.unary_unary("/agora.v1.Nope/Foo", None, None)(b"", timeout=5))
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
            details = error.details() or ""
            assert "agora.v1.Nope/Foo" in details
            for served in (PEER, TEACHER, HEALTH):
                assert served in details
            # Made-up methods of services the node does serve are unknown too: no new label sets.
            for path in ("/agora.v1.Teacher/Random0", "/agora.v1.Teacher/Random1", "/grpc.health.v1.Health/Bogus"):
                error = await rpc_error(channel.unary_unary(path, None, None)(b"", timeout=5))
                assert error.code() == grpc.StatusCode.UNIMPLEMENTED
            await eventually(lambda: requests_total(node, "unknown", "unknown", "UNIMPLEMENTED") == 4)
            assert requests_total(node, "agora.v1.Nope", "Foo", "UNIMPLEMENTED") == 0
            assert requests_total(node, TEACHER, "Random0", "UNIMPLEMENTED") == 0

    run(scenario)


# --- 3. draining ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_stop_drains_in_flight_call_and_reports_not_serving() -> None:
    """stop() reports NOT_SERVING while it still answers (the drain notice), lets a call already
    in flight finish with its reply, and afterwards new calls fail with UNAVAILABLE."""
    node = ScriptedNode(loopback_settings(node={"shutdown_grace_s": 10, "drain_notice_s": 0.5}))

    async def scenario() -> None:
        address = (await node.start()).grpc
        async with aio.insecure_channel(address) as channel:
            caller = SignedCaller()
            await caller.hello(channel)
            assert await health(channel) == "SERVING"
            slow = asyncio.ensure_future(demonstrate(channel, caller, "sleep 1.5", deadline_s=30))
            await eventually(lambda: in_flight(node) == 1)

            stopping = asyncio.ensure_future(node.stop())
            await asyncio.sleep(0)  # let stop() begin: it reports NOT_SERVING first thing
            assert await health(channel) == "NOT_SERVING"
            assert not slow.done()

            reply = await slow
            assert [d.prompt for d in reply.lesson.demonstrations.demonstrations] == ["sleep 1.5"]
            await stopping

            error = await rpc_error(demonstrate(channel, caller, "too late", deadline_s=5))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert requests_total(node, TEACHER, "Demonstrate", "OK") == 1

    run(scenario)


@pytest.mark.timeout(60)
def test_stop_cuts_off_calls_that_outlast_the_grace_period() -> None:
    """A call still running when the grace period ends is cut off (CANCELLED or UNAVAILABLE for
    the caller), stop() returns instead of waiting for it, and the call is counted as CANCELLED."""
    node = ScriptedNode(loopback_settings(node={"shutdown_grace_s": 0.3, "drain_notice_s": 0}))

    async def scenario() -> None:
        address = (await node.start()).grpc
        async with aio.insecure_channel(address) as channel:
            caller = SignedCaller()
            await caller.hello(channel)
            slow = asyncio.ensure_future(rpc_error(demonstrate(channel, caller, "sleep 30", deadline_s=60)))
            await eventually(lambda: in_flight(node) == 1)
            await asyncio.wait_for(node.stop(), timeout=20)
            error = await asyncio.wait_for(slow, timeout=20)
            assert error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            await eventually(lambda: requests_total(node, TEACHER, "Demonstrate", "CANCELLED") == 1)
            assert in_flight(node) == 0

    run(scenario)


# --- 4. message size limit ------------------------------------------------------------------


def test_oversized_request_is_refused_and_channel_keeps_working() -> None:
    """With node.max_message_bytes=65536 a 100 kB request gets RESOURCE_EXHAUSTED, and a small
    request on the same channel afterwards gets its normal answer."""
    node = ScriptedNode(loopback_settings(node={"max_message_bytes": 65536}))

    async def scenario() -> None:
        async with connected(node) as (channel, caller):
            error = await rpc_error(demonstrate(channel, caller, "x" * 100_000))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            reply = await demonstrate(channel, caller, "small")
            assert [d.continuation for d in reply.lesson.demonstrations.demonstrations] == [" ok"]

    run(scenario)


def test_oversized_reply_is_refused_with_resource_exhausted() -> None:
    """The limit holds for replies too: a reply over node.max_message_bytes reaches the caller as
    RESOURCE_EXHAUSTED, not as a truncated or oversized message."""
    node = ScriptedNode(loopback_settings(node={"max_message_bytes": 65536}))

    async def scenario() -> None:
        async with connected(node) as (channel, caller):
            # The request fits exactly; the reply, which echoes the prompt, does not.
            prompt = "x" * (65_536 - demonstrate_request(caller, "").ByteSize() - 2)  # -2: a 3-byte length, not 1
            assert demonstrate_request(caller, prompt).ByteSize() == 65536
            error = await rpc_error(demonstrate(channel, caller, prompt))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "node.max_message_bytes" in (error.details() or "")
            assert (await demonstrate(channel, caller, "small")).lesson.task == "arithmetic"
            # Counted as what the caller saw, not as OK.
            await eventually(lambda: requests_total(node, TEACHER, "Demonstrate", "RESOURCE_EXHAUSTED") == 1)
            assert requests_total(node, TEACHER, "Demonstrate", "OK") == 1

    run(scenario)


# --- 5. metrics per node --------------------------------------------------------------------


def test_two_nodes_in_one_process_keep_separate_metrics() -> None:
    """Each node has its own registry: calls to node A are not counted by node B, and each
    node's /metrics endpoint exports agora_build_info with its own model label."""
    node_a = Node(loopback_settings(node={"name": "node-a"}))
    node_b = Node(loopback_settings(node={"name": "node-b"}, model={"family": "gpt2"}))
    check = {"service": HEALTH, "method": "Check", "code": "OK"}

    async def scenario() -> None:
        async with running(node_a) as address_a, running(node_b), aio.insecure_channel(address_a) as channel:
            for _ in range(3):
                assert await health(channel) == "SERVING"
            await eventually(lambda: node_a.metrics.registry.get_sample_value("agora_rpc_requests_total", check) == 3)
            assert node_b.metrics.registry.get_sample_value("agora_rpc_requests_total", check) is None

            assert node_a.addresses is not None and node_b.addresses is not None
            assert node_a.addresses.metrics_url is not None and node_b.addresses.metrics_url is not None
            text_a = await asyncio.to_thread(fetch, node_a.addresses.metrics_url)
            text_b = await asyncio.to_thread(fetch, node_b.addresses.metrics_url)
        build_a = f'agora_build_info{{model="tiny:llama",version="{__version__}"}} 1.0'
        build_b = f'agora_build_info{{model="tiny:gpt2",version="{__version__}"}} 1.0'
        assert build_a in text_a and build_b not in text_a
        assert build_b in text_b and build_a not in text_b
        assert f'service="{HEALTH}"' in text_a
        assert f'service="{HEALTH}"' not in text_b

    run(scenario)


# --- 6. mTLS --------------------------------------------------------------------------------


def tls_node_settings(tmp_path: Path, ca: CertificateAuthority) -> Settings:
    """Settings for an mTLS node "alice" whose certificate ``ca`` signed, PEMs under tmp_path."""
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    cert_path, key_path = ca.issue("alice", dns_names=("alice",), ips=("127.0.0.1",)).write(tmp_path, "alice")
    return loopback_settings(
        node={"name": "alice"},
        security={"insecure": False, "ca_cert": str(ca_path), "cert": str(cert_path), "key": str(key_path)},
    )


def test_mtls_node_serves_only_clients_with_a_certificate_from_its_ca(tmp_path: Path) -> None:
    """An mTLS node answers a client holding a certificate from the network CA, and refuses a
    plaintext client and a client whose certificate another CA signed."""
    ca, rogue_ca = CertificateAuthority("agora-test-ca"), CertificateAuthority("rogue-ca")
    node = Node(tls_node_settings(tmp_path, ca))
    bob, mallory = ca.issue("bob"), rogue_ca.issue("mallory")

    def check(address: str, credentials: grpc.ChannelCredentials | None) -> HealthResult:
        return check_health(address, timeout_s=5, credentials=credentials, server_name="alice")

    async def scenario() -> None:
        async with running(node) as address:
            # check_health blocks, and the server runs on this thread's loop: call it from another.
            good = await asyncio.to_thread(check, address, channel_credentials(ca.cert_pem, bob.cert, bob.key))
            assert good.status == "SERVING", good
            plain = await asyncio.to_thread(check, address, None)
            assert plain.status == "UNREACHABLE", plain
            rogue = await asyncio.to_thread(check, address, channel_credentials(ca.cert_pem, mallory.cert, mallory.key))
            assert rogue.status == "UNREACHABLE", rogue

    run(scenario)


def test_mtls_node_with_missing_certificate_file_refuses_to_start(tmp_path: Path) -> None:
    """With insecure=False and a certificate file that does not exist, making the node raises
    ConfigError naming that file, before anything listens."""
    ca = CertificateAuthority()
    settings = tls_node_settings(tmp_path, ca)
    missing = tmp_path / "nowhere" / "alice.crt"
    settings.security.cert = missing
    with pytest.raises(ConfigError) as raised:
        Node(settings)
    assert str(missing) in str(raised.value)


# --- 7. config guard ------------------------------------------------------------------------


def test_plaintext_on_a_non_loopback_address_is_refused() -> None:
    """security.insecure on a wildcard address is a ConfigError that says plaintext is for
    loopback only."""
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(overrides={"security": {"insecure": True}, "node": {"listen": "0.0.0.0:5000"}})
