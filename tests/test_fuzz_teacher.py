"""Hostile requests to every Teacher method (hypothesis): huge and empty strings, odd unicode,
enormous counts, non-finite floats, and raw bytes that are not protobuf. Every reply is OK or a
clear status with a sentence (never INTERNAL or UNKNOWN), and the teacher keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.app import Node
from node.client import HELLO, check_health
from node.rpc.agora.v1 import peer_pb2, peer_pb2_grpc, teacher_pb2
from tests.nodes import SignedCaller, running_node
from tests.teachers import teacher_settings

CLEAR_STATUSES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,  # a bad field, named in the sentence
    grpc.StatusCode.FAILED_PRECONDITION,  # the leakage guard blocked the lesson, or nothing to teach from
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # budget, rate limit or message size
    grpc.StatusCode.UNAVAILABLE,  # the model proposed too few examples this time
    grpc.StatusCode.UNAUTHENTICATED,  # raw bytes: no valid signed envelope
}
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.sampled_from(["", " ", "\x00", "\u202e\u0301" * 50, "Q: (1 + 2) =", "x" * 5000, "🙂" * 1500]),
)
TASKS = st.sampled_from(["arithmetic", "", "chess", "ARITHMETIC", "jsonl:/etc/passwd"])
COUNTS = st.one_of(st.integers(0, 40), st.just(2**32 - 1))
FLOATS = st.one_of(st.floats(-10, 10), st.sampled_from([float("nan"), float("inf"), -0.0, 1e30]))

REQUESTS: dict[str, Any] = {
    "Instruct": st.builds(teacher_pb2.InstructRequest, task=TASKS, max_tokens=COUNTS),
    "Exemplify": st.builds(teacher_pb2.ExemplifyRequest, task=TASKS, count=COUNTS, temperature=FLOATS),
    "Demonstrate": st.builds(
        teacher_pb2.DemonstrateRequest,
        task=TASKS,
        prompts=st.lists(HOSTILE_TEXT, max_size=70),
        sampling=st.builds(
            teacher_pb2.SamplingParams,
            max_new_tokens=COUNTS,
            temperature=FLOATS,
            top_k=COUNTS,
            top_p=FLOATS,
            seed=st.integers(0, 2**64 - 1),
            stop=st.lists(HOSTILE_TEXT, max_size=3),
        ),
        banned_words=st.lists(HOSTILE_TEXT, max_size=3),
    ),
    "Critique": st.builds(
        teacher_pb2.CritiqueRequest,
        task=TASKS,
        question=HOSTILE_TEXT,
        attempt=HOSTILE_TEXT,
        round=COUNTS,
        previous_lesson_id=st.one_of(HOSTILE_TEXT, st.just("a" * 64)),
    ),
    "Pose": st.builds(
        teacher_pb2.PoseRequest, task=TASKS, question=HOSTILE_TEXT, num_generalized=COUNTS, num_harder_levels=COUNTS
    ),
    "Score": st.builds(
        teacher_pb2.ScoreRequest,
        task=TASKS,
        kind=st.sampled_from([0, 1, 2, 7]),
        items=st.lists(st.builds(teacher_pb2.ScoreItem, question=HOSTILE_TEXT, text=HOSTILE_TEXT), max_size=70),
    ),
}


@pytest.fixture(scope="module")
def teacher() -> Iterator[tuple[str, SignedCaller]]:
    node = Node(teacher_settings(privacy={"epsilon_budget": 1e6}, teacher={"max_new_tokens": 8}))
    with running_node(node) as addresses:
        caller = SignedCaller("fuzzer")
        with grpc.insecure_channel(addresses.grpc) as channel:
            request = caller.sealed(peer_pb2.HelloRequest(card=caller.card), HELLO)
            caller.server_id = peer_pb2_grpc.PeerStub(channel).Hello(request, timeout=10).card.node_id
        yield addresses.grpc, caller


def status_of(address: str, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/agora.v1.Teacher/{method}", None, None)
        try:
            call(payload, timeout=60)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), method=st.sampled_from(sorted(REQUESTS)))
def test_hostile_requests_get_a_clear_status(teacher: tuple[str, SignedCaller], data: Any, method: str) -> None:
    address, caller = teacher
    request = data.draw(REQUESTS[method])
    payload = caller.sealed(request, f"/agora.v1.Teacher/{method}").SerializeToString()
    code, details = status_of(address, method, payload)
    assert code in CLEAR_STATUSES, (method, code, details)
    assert code == grpc.StatusCode.OK or len(details) > 10, (code, details)  # a sentence, not a bare code
    assert "Traceback" not in details


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(sorted(REQUESTS)), payload=st.binary(max_size=3000))
def test_raw_bytes_get_a_clear_status(teacher: tuple[str, SignedCaller], method: str, payload: bytes) -> None:
    address, _ = teacher
    code, details = status_of(address, method, payload)
    assert code in CLEAR_STATUSES - {grpc.StatusCode.OK}, (code, details)
    assert "Traceback" not in details


def test_the_teacher_serves_after_the_fuzzing(teacher: tuple[str, SignedCaller]) -> None:
    address, caller = teacher
    assert check_health(address).serving
    request = teacher_pb2.PoseRequest(task="arithmetic", question="Q: (1 + 2) =", num_generalized=1)
    code, details = status_of(address, "Pose", caller.sealed(request, "/agora.v1.Teacher/Pose").SerializeToString())
    assert code == grpc.StatusCode.OK, details
