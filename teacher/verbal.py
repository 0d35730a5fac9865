"""Social Learning's lessons from private data (Mohtashami et al. 2024), made differentially private.

Instruct — the verbal lesson. Each shard of n_gen private examples is shown to the model, which
writes an instruction for the task; the instructions are aggregated in keyword space (DP-ICL,
`node.privacy.keywords`), and the model writes the released instruction from the selected
keywords alone, so the text itself never saw a private example.

Exemplify — synthetic examples. The model proposes candidates at temperature tau from a public
prompt (public examples of the task when it has a generator); each private shard votes, in each
of `count` rounds, for the remaining candidate most likely under its own few-shot prompt of
n_gen private examples; a noisy argmax (GNMax or LNMax) picks the round's example. Candidates
are never sampled from private prompts: the vote, not the text, is where private data enters,
which is what makes the release DP. The released examples are ordered by perplexity.
"""

from __future__ import annotations

import re

import grpc

from node.llm.sampling import SamplingParams
from node.privacy.accounting import keyword_charge
from node.privacy.keywords import select_keywords, vocabulary
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks.jsonl_task import JsonlTask
from teacher.core import TeacherCore, shot
from teacher.private import PrivateRecord
from teacher.release import Draft, Release, RequestError

CANDIDATES_PER_EXAMPLE = 3  # proposals per wanted example: the vote needs a choice
_OUTPUT = re.compile(r"\s*Output:\s*")


def _require_private(core: TeacherCore, task: str) -> list[list[PrivateRecord]]:
    shards = core.shards(task)
    if not shards:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this teacher holds no private examples of task {task!r} to teach from",
        )
    return shards


async def instruct(core: TeacherCore, request: teacher_pb2.InstructRequest, release: Release) -> Draft:
    privacy, task = core.settings.privacy, core.tasks[request.task]
    max_tokens = min(request.max_tokens or core.settings.teacher.max_new_tokens, core.settings.teacher.max_new_tokens)
    shards = _require_private(core, request.task)
    public = [task.summary, *([] if isinstance(task, JsonlTask) else task.corpus(n_per_split=10))]
    vocab = vocabulary(public)
    k = min(privacy.keyword_count, len(vocab) - 1)
    charge = keyword_charge(privacy.keyword_epsilon, k, privacy.ptr_epsilon, privacy.ptr_delta, len(shards))
    release.charge(charge)

    # 1. Each shard's instruction, written from its private examples.
    suffix = "Instruction for this task:"
    prompts = [core.fit([shot(r) for r in records], suffix, max_tokens) for records in shards]
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
    prompt = core.fit([], f"Keywords: {', '.join(chosen.keywords)}\nInstruction for this task:", max_tokens)
    written = (await core.host.generate([prompt], core.sampling(max_tokens, stop=("\n",))))[0].text.strip()
    text = written or f"Keywords for this task: {', '.join(chosen.keywords)}."
    parameters = {**charge.parameters, "ptr_passed": float(chosen.route == "ptr")}
    return Draft(request.task, lesson_pb2.Instruction(text=text), [text], charge.mechanism, parameters)


def _parse(text: str) -> lesson_pb2.Example | None:
    """A proposal "X\\nOutput: Y" as an example; None when it has no input."""
    parts = _OUTPUT.split(text.strip(), maxsplit=1)
    source = parts[0].strip()
    if not source:
        return None
    return lesson_pb2.Example(input=source, output=parts[1].strip() if len(parts) > 1 else "")


async def exemplify(core: TeacherCore, request: teacher_pb2.ExemplifyRequest, release: Release) -> Draft:
    teacher, task = core.settings.teacher, core.tasks[request.task]
    shards = _require_private(core, request.task)
    count, max_tokens = request.count, teacher.max_new_tokens
    charge = core.vote_charge(len(shards), queries=count)
    release.charge(charge)

    # 1. Proposals from a public prompt, at temperature tau.
    public = [] if isinstance(task, JsonlTask) else task.generate("train", 3, seed=int(core.rng.integers(1 << 30)))
    public_prompt = core.fit([shot(PrivateRecord(e.question, e.rationale)) for e in public], "Input:", max_tokens)
    wanted = max(count * CANDIDATES_PER_EXAMPLE, 4)
    params = SamplingParams(max_new_tokens=max_tokens, temperature=request.temperature or teacher.temperature)
    proposals = await core.host.generate([public_prompt] * wanted, params)
    candidates: dict[tuple[str, str], lesson_pb2.Example] = {}
    for proposal in proposals:
        example = _parse(proposal.text.split("\n\nInput:")[0])
        if example is not None:
            candidates.setdefault((example.input, example.output), example)
    pool = list(candidates.values())
    if len(pool) < count:
        release.fail()
        raise RequestError(
            grpc.StatusCode.UNAVAILABLE,
            f"the teacher's model proposed only {len(pool)} usable examples for {count} wanted; try again",
        )
    texts = [f" {e.input}\nOutput: {e.output}" for e in pool]

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
    public_scores = await core.host.score([public_prompt] * len(picked), [texts[i] for i in picked])
    ranked = [pool[i] for _, i in sorted(zip((-s.mean for s in public_scores), picked, strict=True))]
    examples = lesson_pb2.ExampleSet(examples=ranked)
    return Draft(
        request.task, examples, [f"{e.input}\n{e.output}" for e in ranked], charge.mechanism, dict(charge.parameters)
    )
