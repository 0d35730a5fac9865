"""The wire contract: generated code matches proto/, and every part of it is documented."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from node import protogen
from node.rpc.agora.v1 import lesson_pb2, node_pb2, peer_pb2, teacher_pb2


def test_generated_code_is_up_to_date() -> None:
    """node/rpc/ is exactly what `make proto` writes from the current .proto sources."""
    assert protogen.stale_files() == []


def test_stale_check_notices_a_changed_proto(tmp_path: Path) -> None:
    """The staleness check is not vacuous: an edited generated file is reported."""
    rpc = tmp_path / "rpc"
    protogen.generate(rpc)
    assert protogen.stale_files(rpc) == []
    edited = rpc / "agora" / "v1" / "node_pb2.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (rpc / "agora" / "v1" / "extra_pb2.py").write_text("")
    assert protogen.stale_files(rpc) == ["agora/v1/extra_pb2.py", "agora/v1/node_pb2.py"]


def _documented_descriptors() -> descriptor_pb2.FileDescriptorSet:
    include = str(Path(protoc.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory() as raw:
        out = Path(raw) / "set.bin"
        sources = [str(p.relative_to(protogen.PROTO_ROOT)) for p in protogen.proto_sources()]
        args = ["protoc", f"-I{protogen.PROTO_ROOT}", f"-I{include}", "--include_source_info",
                f"--descriptor_set_out={out}", *sources]  # fmt: skip
        assert protoc.main(args) == 0
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Names of messages, fields, enums, values, services and methods with no comment."""
    comments = {
        tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments or loc.trailing_comments
    }
    missing: list[str] = []

    def check(path: tuple[int, ...], name: str) -> None:
        if path not in comments:
            missing.append(f"{file.name}: {name}")

    def enum(path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        for i, value in enumerate(e.value):
            if not value.name.endswith("_UNSPECIFIED"):  # the proto3 zero value needs no prose
                check((*path, 2, i), f"{scope}{e.name}.{value.name}")

    def message(path: tuple[int, ...], m: descriptor_pb2.DescriptorProto, scope: str) -> None:
        if not m.options.map_entry:
            check(path, f"{scope}{m.name}")
        for i, field in enumerate(m.field):
            check((*path, 2, i), f"{scope}{m.name}.{field.name}")
        for i, nested in enumerate(m.nested_type):
            if not nested.options.map_entry:
                message((*path, 3, i), nested, f"{scope}{m.name}.")
        for i, nested_enum in enumerate(m.enum_type):
            enum((*path, 4, i), nested_enum, f"{scope}{m.name}.")

    for i, m in enumerate(file.message_type):
        message((4, i), m, "")
    for i, e in enumerate(file.enum_type):
        check((5, i), e.name)
        enum((5, i), e, "")
    for i, service in enumerate(file.service):
        check((6, i), service.name)
        for j, method in enumerate(service.method):
            check((6, i, 2, j), f"{service.name}.{method.name}")
    return missing


def test_every_part_of_the_contract_is_documented() -> None:
    files = [f for f in _documented_descriptors().file if f.name.startswith("agora/")]
    assert {f.name for f in files} == {f"agora/v1/{n}.proto" for n in ("node", "lesson", "peer", "teacher")}
    missing = [name for f in files for name in _undocumented(f)]
    assert missing == []


def test_services_have_the_designed_methods() -> None:
    teacher = teacher_pb2.DESCRIPTOR.services_by_name["Teacher"]
    peer = peer_pb2.DESCRIPTOR.services_by_name["Peer"]
    assert [m.name for m in teacher.methods] == ["Instruct", "Exemplify", "Demonstrate", "Critique", "Pose", "Score"]
    assert [m.name for m in peer.methods] == ["Hello", "Gossip", "Ping"]


@pytest.mark.parametrize(
    "message",
    [*(m for m in (*teacher_pb2.DESCRIPTOR.message_types_by_name.values(),
                   *peer_pb2.DESCRIPTOR.message_types_by_name.values())
       if m.name.endswith(("Request", "Reply")))],
    ids=lambda m: m.name,
)  # fmt: skip
def test_every_request_and_reply_carries_an_envelope_first(message: object) -> None:
    """Field 1 of every request and reply is the signed Envelope (DESIGN section 2)."""
    field = message.fields_by_number[1]  # type: ignore[attr-defined]
    assert field.name == "envelope"
    assert field.message_type.full_name == "agora.v1.Envelope"


def test_lesson_round_trips_with_its_body_as_kind() -> None:
    lesson = lesson_pb2.Lesson(
        lesson_id="ab" * 32,
        teacher_node_id="cd" * 32,
        task="arithmetic",
        model=node_pb2.ModelInfo(id="tiny:llama", parameter_count=1234),
        privacy=lesson_pb2.PrivacyReport(mechanism="none", epsilon_budget=8.0, delta=1e-6),
        feedback=lesson_pb2.Feedback(correct=False, first_wrong_step=2, text="Step (2) is wrong."),
    )
    decoded = lesson_pb2.Lesson.FromString(lesson.SerializeToString(deterministic=True))
    assert decoded == lesson
    assert decoded.WhichOneof("body") == "feedback"
    assert decoded.feedback.first_wrong_step == 2
