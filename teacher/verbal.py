"""Social Learning's lessons from private data (Mohtashami et al. 2024): as the paper makes them,
or differentially private. A teacher setting picks the method of each lesson, and the lesson's
PrivacyReport names the one that ran.

Instruct — the verbal lesson (`teacher.instruct_method`).
- `keywords` (the default; DP): each shard of n_gen private examples is shown to the model, which
  writes an instruction for the task; the instructions are aggregated in keyword space (DP-ICL,
  `node.privacy.keywords`), and the model writes the released instruction from the selected
  keywords alone, so the text itself never saw a private example. Mechanism `dp_icl_keyword`.
- `private_prompt` (the paper's; not DP): the model writes the instruction from one shard's
  few-shot prompt of private examples, and that instruction is released as written.

Exemplify — synthetic examples (`teacher.exemplify_method`).
- `vote` (the default; DP): the model proposes candidates at temperature tau from a public prompt
  (public examples of the task when it has a generator); each private shard votes, in each of
  `count` rounds, for the remaining candidate most likely under its own few-shot prompt of n_gen
  private examples; a noisy argmax (GNMax or LNMax) picks the round's example. Candidates are
  never sampled from private prompts: the vote, not the text, is where private data enters,
  which is what makes the release DP. Mechanism `gnmax` or `lnmax`, `count` queries.
- `private_prompt` (the paper's; not DP): for each wanted example the model continues "Input:"
  after a few-shot prompt of n_gen private examples (one shard, the shards taken in turn from a
  random one) at temperature tau, and the continuation "X\\nOutput: Y" is the example.

A `private_prompt` lesson is shaped by private text directly, so it has no DP guarantee: it
carries mechanism `private_prompt_not_dp`, charges the ledger nothing and claims no epsilon
(epsilon_charged 0). The paper measures its privacy by a Secret Sharer canary audit instead
(`agora audit`). Whichever method ran, the leakage guard (`teacher.release`) checks every
released text, and a blocked lesson is not sent. In both Exemplify methods a proposal without an
input or without an output is dropped, and the examples are released best first by likelihood
under the public prompt (post-processing).
"""

from __future__ import annotations

import re

import grpc

from node.llm.sampling import SamplingParams
from node.privacy.accounting import NOT_DP, keyword_charge
from node.privacy.keywords import select_keywords, vocabulary
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks.jsonl_task import JsonlTask
from teacher.core import TeacherCore, shot
from teacher.private import PrivateRecord
from teacher.release import Draft, Release, RequestError

CANDIDATES_PER_EXAMPLE = 3  # vote: proposals per wanted example, the vote needs a choice
ATTEMPTS = 3  # private_prompt: rounds of sampling for the examples (or instruction) still missing
INSTRUCTION = "Instruction for this task:"
_OUTPUT = re.compile(r"\s*Output:\s*")


def _require_private(core: TeacherCore, task: str) -> list[list[PrivateRecord]]:
    shards = core.shards(task)
    if not shards:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this teacher holds no private examples of task {task!r} to teach from",
        )
    return shards


def _parse(text: str) -> lesson_pb2.Example | None:
    """A proposal "X\\nOutput: Y" as an example; None when it lacks an input or an output."""
    parts = _OUTPUT.split(text.split("\n\nInput:")[0].strip(), maxsplit=1)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        return None
    return lesson_pb2.Example(input=parts[0].strip(), output=parts[1].strip())


def _public_prompt(core: TeacherCore, task: str, max_tokens: int) -> str:
    """The few-shot prompt anyone could build: three generated examples (none for a jsonl task)."""
    source = core.tasks[task]
    public = [] if isinstance(source, JsonlTask) else source.generate("train", 3, seed=int(core.rng.integers(1 << 30)))
    return core.fit([shot(PrivateRecord(e.question, e.rationale)) for e in public], "Input:", max_tokens)


def _text(example: lesson_pb2.Example) -> str:
    """An example as it continues an "Input:" prompt."""
    return f" {example.input}\nOutput: {example.output}"


async def _best_first(
    core: TeacherCore, public_prompt: str, examples: list[lesson_pb2.Example]
) -> list[lesson_pb2.Example]:
    """The examples by likelihood under the public prompt, best first (post-processing)."""
    scores = await core.host.score([public_prompt] * len(examples), [_text(e) for e in examples])
    return [examples[i] for i in sorted(range(len(examples)), key=lambda i: -scores[i].mean)]


async def instruct(core: TeacherCore, request: teacher_pb2.InstructRequest, release: Release) -> Draft:
    if core.settings.teacher.instruct_method == "private_prompt":
        return await _instruct_from_private_prompt(core, request)
    privacy, task = core.settings.privacy, core.tasks[request.task]
    max_tokens = min(request.max_tokens or core.settings.teacher.max_new_tokens, core.settings.teacher.max_new_tokens)
    shards = _require_private(core, request.task)
    public = [task.summary, *([] if isinstance(task, JsonlTask) else task.corpus(n_per_split=10))]
    vocab = vocabulary(public)
    k = min(privacy.keyword_count, len(vocab) - 1)
    charge = keyword_charge(privacy.keyword_epsilon, k, privacy.ptr_epsilon, privacy.ptr_delta, len(shards))
    release.charge(charge)

    # 1. Each shard's instruction, written from its private examples.
    prompts = [core.fit([shot(r) for r in records], INSTRUCTION, max_tokens) for records in shards]
    responses = await core.host.generate(prompts, core.sampling(max_tokens, stop=("\n",)))
    # 2. Keyword-space aggregation: top-k* public words by PTR or the exponential mechanism.
    chosen = select_keywords(
        [r.text for r in responses],
        vocab,
        k,
        em_epsilon=privacy.keyword_epsilon,
        ptr_epsilon=privacy.ptr_epsilon,
        ptr_delta=privacy.ptr_delta,
        rng=core.rng,
    )
    # 3. The released instruction, written from the keywords alone (post-processing).
    prompt = core.fit([], f"Keywords: {', '.join(chosen.keywords)}\n{INSTRUCTION}", max_tokens)
    written = (await core.host.generate([prompt], core.sampling(max_tokens, stop=("\n",))))[0].text.strip()
    text = written or f"Keywords for this task: {', '.join(chosen.keywords)}."
    parameters = {**charge.parameters, "ptr_passed": float(chosen.route == "ptr")}
    return Draft(request.task, lesson_pb2.Instruction(text=text), [text], charge.mechanism, parameters)


async def _instruct_from_private_prompt(core: TeacherCore, request: teacher_pb2.InstructRequest) -> Draft:
    """The paper's Instruct: one instruction written from a shard's private few-shot prompt, as is.
    Not DP, so nothing is charged; a shard whose prompt yields an empty line passes to the next."""
    teacher = core.settings.teacher
    max_tokens = min(request.max_tokens or teacher.max_new_tokens, teacher.max_new_tokens)
    shards = _require_private(core, request.task)
    start = int(core.rng.integers(len(shards)))
    for attempt in range(min(ATTEMPTS, len(shards))):
        records = shards[(start + attempt) % len(shards)]
        prompt = core.fit([shot(r) for r in records], INSTRUCTION, max_tokens)
        text = (await core.host.generate([prompt], core.sampling(max_tokens, stop=("\n",))))[0].text.strip()
        if text:
            parameters = {"prompts": attempt + 1.0, "shards": len(shards), "temperature": teacher.temperature}
            return Draft(request.task, lesson_pb2.Instruction(text=text), [text], NOT_DP, parameters)
    raise RequestError(grpc.StatusCode.UNAVAILABLE, "the teacher's model wrote an empty instruction; try again")


async def exemplify(core: TeacherCore, request: teacher_pb2.ExemplifyRequest, release: Release) -> Draft:
    if core.settings.teacher.exemplify_method == "private_prompt":
        return await _exemplify_from_private_prompt(core, request)
    teacher = core.settings.teacher
    shards = _require_private(core, request.task)
    count, max_tokens = request.count, teacher.max_new_tokens
    charge = core.vote_charge(len(shards), queries=count)
    release.charge(charge)

    # 1. Proposals from a public prompt, at temperature tau.
    public_prompt = _public_prompt(core, request.task, max_tokens)
    wanted = max(count * CANDIDATES_PER_EXAMPLE, 4)
    params = SamplingParams(max_new_tokens=max_tokens, temperature=request.temperature or teacher.temperature)
    proposals = await core.host.generate([public_prompt] * wanted, params)
    candidates: dict[tuple[str, str], lesson_pb2.Example] = {}
    for proposal in proposals:
        example = _parse(proposal.text)
        if example is not None:
            candidates.setdefault((example.input, example.output), example)
    pool = list(candidates.values())
    if len(pool) < count:
        release.fail()
        raise _too_few(len(pool), count)
    texts = [_text(e) for e in pool]

    # 2. Each shard scores every candidate under its own private few-shot prompt.
    shard_prompts = [core.fit([shot(r) for r in records], "Input:", max_tokens) for records in shards]
    contexts = [p for p in shard_prompts for _ in texts]
    scores = await core.host.score(contexts, texts * len(shard_prompts))
    likelihood = [[scores[s * len(texts) + c].mean for c in range(len(texts))] for s in range(len(shard_prompts))]

    # 3. `count` rounds of noisy argmax over the shards' votes.
    remaining, picked = list(range(len(pool))), []
    for _ in range(count):
        votes = [0] * len(remaining)
        for row in likelihood:
            votes[max(range(len(remaining)), key=lambda i: row[remaining[i]])] += 1
        picked.append(remaining.pop(core.vote.argmax(votes, core.rng)))

    # 4. Best first: perplexity under the public prompt (post-processing).
    ranked = await _best_first(core, public_prompt, [pool[i] for i in picked])
    examples = lesson_pb2.ExampleSet(examples=ranked)
    return Draft(
        request.task, examples, [f"{e.input}\n{e.output}" for e in ranked], charge.mechanism, dict(charge.parameters)
    )


async def _exemplify_from_private_prompt(core: TeacherCore, request: teacher_pb2.ExemplifyRequest) -> Draft:
    """The paper's Exemplify: each example written by the model after a private few-shot prompt.
    Not DP, so nothing is charged; the guard checks every example on release."""
    teacher = core.settings.teacher
    shards = _require_private(core, request.task)
    count, max_tokens = request.count, teacher.max_new_tokens
    tau = request.temperature or teacher.temperature
    prompts = [core.fit([shot(r) for r in records], "Input:", max_tokens) for records in shards]
    params = SamplingParams(max_new_tokens=max_tokens, temperature=tau)

    # 1. One continuation per wanted example, each after the next shard's prompt; rounds for the
    #    examples still missing when a proposal has no input or output or repeats another.
    start, sampled = int(core.rng.integers(len(prompts))), 0
    kept: dict[tuple[str, str], lesson_pb2.Example] = {}
    for _ in range(ATTEMPTS):
        missing = count - len(kept)
        if missing <= 0:
            break
        chosen = [prompts[(start + sampled + j) % len(prompts)] for j in range(missing)]
        sampled += missing
        for proposal in await core.host.generate(chosen, params):
            example = _parse(proposal.text)
            if example is not None and len(kept) < count:
                kept.setdefault((example.input, example.output), example)
    if len(kept) < count:
        raise _too_few(len(kept), count)

    # 2. Best first: perplexity under the public prompt.
    examples = await _best_first(core, _public_prompt(core, request.task, max_tokens), list(kept.values()))
    parameters = {
        "examples_per_shard": teacher.examples_per_shard,
        "proposals": sampled,
        "shards": len(shards),
        "temperature": tau,
    }
    texts = [f"{e.input}\n{e.output}" for e in examples]
    return Draft(request.task, lesson_pb2.ExampleSet(examples=examples), texts, NOT_DP, parameters)


def _too_few(usable: int, count: int) -> RequestError:
    return RequestError(
        grpc.StatusCode.UNAVAILABLE,
        f"the teacher's model proposed only {usable} usable examples for {count} wanted; try again",
    )
