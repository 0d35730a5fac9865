"""Exemplify and Instruct as Social Learning makes them (teacher.*_method private_prompt: the
model writes from a prompt of private examples; not DP) beside the DP defaults (vote, keywords),
over gRPC against real nodes whose tiny real model was trained on Exemplify pages. The host is
instrumented (a ModelHost subclass) to record the prompts it generates from or, to inject faults,
to answer with scripted continuations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from node.app import Node
from node.config import ConfigError, load_settings
from node.llm.host import ModelHost
from node.llm.placement import resolve_placement
from node.llm.sampling import Generation, SamplingParams
from node.privacy.accounting import NOT_DP, AccountingError, Charge
from node.privacy.ledger import LedgerEvent
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks import get_task
from node.tasks.base import Example
from teacher.core import shot
from teacher.verbal import _parse
from tests.nodes import running_node
from tests.teachers import Student, blocked_total, teacher_settings

ARITHMETIC = get_task("arithmetic")
SHOTS = 3  # teacher.examples_per_shard (n_gen) of these teachers


class RecordingHost(ModelHost):
    """The real model, recording every prompt it generates from and what it wrote."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompts: list[str] = []
        self.texts: list[str] = []

    async def generate(
        self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Generation]:
        self.prompts.extend(prompts)
        results = await super().generate(prompts, params)
        self.texts.extend(result.text for result in results)
        return results

    def clear(self) -> None:
        self.prompts.clear()
        self.texts.clear()


class ScriptedHost(RecordingHost):
    """Fault injection: the n-th continuation (counted over the host's life) is `write(prompt, n)`;
    scoring stays the real model's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write: Callable[[str, int], str] = lambda prompt, n: ""

    async def generate(
        self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Generation]:
        for prompt in prompts:
            self.prompts.append(prompt)
            self.texts.append(self.write(prompt, len(self.texts)))
        return [Generation(text, (), "stop", 0) for text in self.texts[-len(prompts) :]]


def public_examples(node: Node, n: int) -> list[Example]:
    """n well-formed examples of the public generator that the node's guard lets out on their own
    (a templated public example can still come closer to some private record than the baseline)."""
    assert node.teacher is not None
    guard = node.teacher.releaser.guard
    passing = (
        e for e in ARITHMETIC.generate("train", 64, seed=0) if guard.check(f"{e.question}\n{e.rationale}").passed
    )
    return [next(passing) for _ in range(n)]


def continuation(example: Example) -> str:
    """An example as the model would continue "Input:" with it."""
    return f" {example.question}\nOutput: {example.rationale}\n\nInput:"


@contextmanager
def teacher_node(model: Path, host_type: type[RecordingHost], **teacher: Any) -> Iterator[tuple[Node, str, Any]]:
    """A running teacher on the page-trained model, its host replaced by an instrumented one.
    Shards of SHOTS examples: the tiny model was trained on pages of one to three."""
    settings = {"max_new_tokens": 64, "examples_per_shard": SHOTS, **teacher}
    node = Node(teacher_settings(model={"source": str(model)}, teacher=settings))
    core = node.teacher
    assert core is not None
    host = host_type.load(model, resolve_placement("cpu", "float32"))
    host.on_generated, original = core.host.on_generated, core.host
    core.host = host
    original.close()
    with running_node(node) as addresses:
        yield node, addresses.grpc, host


def call(address: str, method: str, request: Any, until_released: RecordingHost | None = None) -> Any:
    """One call; with until_released, asked again while the sampling model's lesson is refused
    ("try again", or blocked by the guard), the host's records kept for the last try only."""

    async def main() -> Any:
        async with aio.insecure_channel(address) as channel:
            student = Student(channel)
            await student.hello(channel)
            if until_released is None:
                return await student.call(method, request, timeout_s=120)
            return await student.released(method, request, before=until_released.clear, timeout_s=120)

    return asyncio.run(main())


def refusal(address: str, method: str, request: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as refused:
        call(address, method, request)
    return refused.value


def events(node: Node) -> list[LedgerEvent]:
    assert node.teacher is not None
    return node.teacher.releaser.ledger.events()


def private_shots(node: Node) -> list[str]:
    assert node.teacher is not None
    return [shot(record) for record in node.teacher.private.records("arithmetic")]


def check_not_dp(report: lesson_pb2.PrivacyReport) -> None:
    """The report says the method is not DP and claims no epsilon; the guard's checks all ran."""
    assert report.mechanism == NOT_DP == "private_prompt_not_dp"
    assert report.epsilon_charged == 0 and report.delta_charged == 0
    assert {"epsilon", "sigma", "em_epsilon", "queries"}.isdisjoint(report.parameters)
    names = [check.name for check in report.checks]
    assert {"canary", "verbatim_ngram", "levenshtein"} <= set(names) and all(c.passed for c in report.checks)


def test_the_settings_default_to_the_dp_methods_and_name_the_paper_method() -> None:
    teacher = load_settings().teacher
    assert (teacher.exemplify_method, teacher.instruct_method) == ("vote", "keywords")
    chosen = load_settings(overrides={"teacher": {"exemplify_method": "private_prompt"}}).teacher
    assert chosen.exemplify_method == "private_prompt"
    with pytest.raises(ConfigError, match="exemplify_method"):
        load_settings(overrides={"teacher": {"exemplify_method": "paper"}})
    with pytest.raises(ConfigError, match="instruct_method"):
        load_settings(overrides={"teacher": {"instruct_method": "vote"}})


def test_the_not_dp_label_cannot_be_charged_as_a_dp_event_of_epsilon_0() -> None:
    with pytest.raises(AccountingError, match="unknown mechanism 'private_prompt_not_dp'"):
        Charge(NOT_DP).event()


def test_parse_drops_proposals_without_an_input_or_an_output() -> None:
    example = _parse(" Q: (1 + 2) =\nOutput: (1) 3.\n(Final response) So the answer is 3.\n\nInput: Q: (4 - 1) =")
    assert example == lesson_pb2.Example(
        input="Q: (1 + 2) =", output="(1) 3.\n(Final response) So the answer is 3."
    )  # only the first example of a continuation that went on to the next
    assert _parse(" Q: (1 + 2) =\nOutput: ") is None  # an empty output
    assert _parse(" Q: (1 + 2) =\nOutput:\n\nInput: Q: (4 - 1) =\nOutput: 3") is None  # empty before the next
    assert _parse(" Q: (1 + 2) = 3") is None  # no output at all
    assert _parse("\nOutput: 3") is None  # no input
    assert _parse("") is None


def test_private_prompt_exemplify_writes_from_private_examples_and_claims_no_epsilon(page_model: Path) -> None:
    with teacher_node(page_model, RecordingHost, exemplify_method="private_prompt") as (node, address, host):
        shots, before = private_shots(node), events(node)
        request = teacher_pb2.ExemplifyRequest(task="arithmetic", count=3, temperature=1.0)
        lesson = call(address, "Exemplify", request, until_released=host).lesson
        examples = lesson.examples.examples
        assert len(examples) == 3 and all(e.input.strip() and e.output.strip() for e in examples)
        # Every continuation was sampled after "Input:" from a prompt holding private examples,
        # one shard per wanted example: the first three prompts are three different shards.
        assert host.prompts and all(p.endswith("Input:") for p in host.prompts)
        assert all(sum(s in prompt for s in shots) == SHOTS for prompt in host.prompts)
        assert len(set(host.prompts[:3])) == 3
        # The released examples are what the model wrote, parsed.
        written = [_parse(text) for text in host.texts]
        assert {(e.input, e.output) for e in examples} <= {(w.input, w.output) for w in written if w is not None}
        check_not_dp(lesson.privacy)
        assert lesson.privacy.parameters["temperature"] == pytest.approx(1.0)
        assert lesson.privacy.parameters["proposals"] == len(host.prompts)
        assert events(node) == before  # the ledger of DP charges is not charged
        assert lesson.privacy.epsilon_spent == node.teacher.releaser.ledger.spent  # type: ignore[union-attr]


def test_vote_exemplify_samples_from_a_public_prompt_and_charges_its_vote(page_model: Path) -> None:
    with teacher_node(page_model, RecordingHost) as (node, address, host):
        shots = private_shots(node)
        request = teacher_pb2.ExemplifyRequest(task="arithmetic", count=2)
        lesson = call(address, "Exemplify", request, until_released=host).lesson
        assert len(lesson.examples.examples) == 2
        assert all(e.output.strip() for e in lesson.examples.examples)
        # The proposals never saw a private example: the shards only voted.
        assert len(host.prompts) == 6 and not any(s in prompt for prompt in host.prompts for s in shots)
        report = lesson.privacy
        assert report.mechanism == "gnmax" and report.parameters["queries"] == 2 and report.parameters["shards"] == 8
        assert report.epsilon_charged > 0 and report.epsilon_spent >= report.epsilon_charged
        *refused, event = events(node)  # refused tries stay charged: the vote ran on private data
        assert {(e.charge.mechanism, e.status) for e in refused} <= {("gnmax", "blocked"), ("gnmax", "failed")}
        assert (event.charge.mechanism, event.status, event.lesson_id) == ("gnmax", "released", lesson.lesson_id)
        assert event.epsilon == pytest.approx(report.epsilon_charged)


def test_proposals_with_an_empty_output_are_dropped_by_both_methods(page_model: Path) -> None:
    empty = [f" Q: ({i} + {i} + {i}) =\nOutput: \n\nInput:" for i in range(7)]

    # Vote: 9 proposals for 3 examples, 7 of them without an output, leave 2 candidates.
    with teacher_node(page_model, ScriptedHost) as (node, address, host):
        vote_script = [*empty, *map(continuation, public_examples(node, 2))]
        host.write = lambda prompt, n: vote_script[n]
        refused = refusal(address, "Exemplify", teacher_pb2.ExemplifyRequest(task="arithmetic", count=3))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "only 2 usable examples for 3 wanted" in str(refused.details())
        assert len(host.prompts) == 9
        assert [(e.charge.mechanism, e.status) for e in events(node)] == [("gnmax", "failed")]

    # The paper's method: a round of 2 continuations, one empty, then a round for the missing one.
    with teacher_node(page_model, ScriptedHost, exemplify_method="private_prompt") as (node, address, host):
        good = public_examples(node, 2)
        script = [empty[0], *map(continuation, good)]
        host.write = lambda prompt, n: script[n]
        lesson = call(address, "Exemplify", teacher_pb2.ExemplifyRequest(task="arithmetic", count=2)).lesson
        released = {(e.input, e.output) for e in lesson.examples.examples}
        assert released == {(e.question, e.rationale) for e in good}
        assert lesson.privacy.parameters["proposals"] == 3 and len(host.prompts) == 3
        check_not_dp(lesson.privacy)
        assert events(node) == []


def test_private_prompt_exemplify_guards_every_example(page_model: Path) -> None:
    """The second of two examples copies the private record its prompt opens with: the whole
    lesson is blocked, counted, not stored, and still charges no epsilon."""

    def copy_second(prompt: str, n: int) -> str:
        if n == 0:
            return continuation(good)
        record = prompt.split("Input:")[1]  # the first private example in the prompt
        return record.rstrip("\n") + "\n\nInput:"

    with teacher_node(page_model, ScriptedHost, exemplify_method="private_prompt") as (node, address, host):
        [good] = public_examples(node, 1)
        host.write = copy_second
        refused = refusal(address, "Exemplify", teacher_pb2.ExemplifyRequest(task="arithmetic", count=2))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "leakage guard" in str(refused.details())
        assert "Input:" + host.prompts[1].split("Input:")[1] in private_shots(node)  # it did copy a record
        assert blocked_total(node) == 1 and events(node) == []
        assert not node.store.rows("SELECT lesson_id FROM lessons")


def test_private_prompt_instruct_releases_what_the_model_wrote_and_claims_no_epsilon(page_model: Path) -> None:
    with teacher_node(page_model, RecordingHost, instruct_method="private_prompt") as (node, address, host):
        shots = private_shots(node)
        request = teacher_pb2.InstructRequest(task="arithmetic", max_tokens=16)
        lesson = call(address, "Instruct", request, until_released=host).lesson
        # The model's own line after a prompt of private examples, released as written: no
        # keyword aggregation, no second prompt written from keywords.
        assert host.prompts and all(p.endswith("Instruction for this task:") for p in host.prompts)
        assert all(sum(s in prompt for s in shots) == SHOTS for prompt in host.prompts)
        assert not any("Keywords:" in p for p in host.prompts)
        assert lesson.instruction.text == host.texts[-1].strip() != ""
        check_not_dp(lesson.privacy)
        assert lesson.privacy.parameters["prompts"] == len(host.prompts)
        assert events(node) == []


def test_keywords_instruct_stays_dp(page_model: Path) -> None:
    with teacher_node(page_model, RecordingHost) as (node, address, host):
        lesson = call(address, "Instruct", teacher_pb2.InstructRequest(task="arithmetic", max_tokens=16)).lesson
        assert len(host.prompts) == 8 + 1 and host.prompts[-1].startswith("Keywords:")  # 8 shards, then keywords
        assert lesson.privacy.mechanism == "dp_icl_keyword" and lesson.privacy.epsilon_charged > 0
        assert [(e.charge.mechanism, e.status) for e in events(node)] == [("dp_icl_keyword", "released")]
